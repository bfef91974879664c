// Chat client: streams answers, renders markdown safely, stops, reconnects, never loses a message.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  const list = document.getElementById("messages");
  const form = document.getElementById("ask-form");
  const input = document.getElementById("ask-input");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const statusEl = document.getElementById("status");
  const banner = document.getElementById("offline-banner");
  const sidebar = document.getElementById("conversations");
  const titleEl = document.getElementById("chat-title");
  // The widget keeps each site's conversations apart from the chat page's (same origin storage).
  const PREFIX = root.dataset.storagePrefix || "";
  const OUTBOX_KEY = PREFIX + "chat.outbox";
  const LAST_KEY = PREFIX + "chat.conversation";
  const handoffButton = document.getElementById("handoff-button");
  const handoffBanner = document.getElementById("handoff-banner");
  const stringsEl = document.getElementById("chat-strings");
  // Django's JavaScript catalogue (jsi18n) defines gettext in the page's language; without it, English.
  const _ = typeof window.gettext === "function" ? window.gettext : function (text) { return text; };
  const T = Object.assign({
    handoff: _("Talk to a person"),
    offer: _("Talk to a person?"),
    waiting: _("We are getting a person to help you…"),
    joined: _("{agent} has joined the conversation."),
    closed: _("The conversation with {agent} has ended; the assistant answers again."),
    away: _("Our team is away right now. Expect a reply from {when}."),
    email_prompt: _("Your e-mail (optional), so we can answer you there:"),
    email_save: _("Save"),
    email_saved: _("Thank you, we will write to this address."),
    cancel: _("Back to the assistant"),
    agent: _("Support"),
  }, stringsEl ? JSON.parse(stringsEl.textContent) : {});
  // A widget visitor is a random token in this frame's storage: a third-party cookie would not last.
  let visitor = null;
  if (root.dataset.visitor) {
    visitor = localStorage.getItem(PREFIX + "chat.visitor");
    if (!visitor) { visitor = newId().replace(/[^A-Za-z0-9_-]/g, ""); localStorage.setItem(PREFIX + "chat.visitor", visitor); }
  }
  let handoff = null; // the open conversation's latest handoff.status frame

  let socket = null;
  let retries = 0;
  let conversationId = null;
  let newThread = null; // a "new conversation" not yet created on the server
  let inFlight = null; // the outbox entry sent and not yet acknowledged or answered
  let answering = null; // {li, text, messageId}
  let pinned = true; // follow the newest text unless the customer scrolled up
  let retryTimer = null;

  // --- Safe markdown: raw HTML in model or document text is shown as text, then sanitised. ---
  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  marked.use({
    gfm: true,
    breaks: true,
    renderer: {
      html: function (token) { return escapeHtml(token.text); },
      // No remote images from answers: show their alt text.
      image: function (token) { return escapeHtml(token.text || ""); },
    },
  });
  // Links are clickable only to the company's own sites (CHAT_LINK_ALLOWED_DOMAINS and their
  // subdomains, this site, relative links): a document or a cached answer cannot send customers to
  // a look-alike site. Any other link keeps its words as plain text.
  const LINK_DOMAINS = (root.dataset.linkDomains || "").split(",")
    .map(function (d) { return d.trim().toLowerCase().replace(/^\.+|\.+$/g, ""); })
    .filter(Boolean);
  function hostAllowed(host) {
    host = String(host || "").toLowerCase().replace(/\.+$/, "");
    if (!host) return false;
    if (host === location.hostname.toLowerCase()) return true;
    return LINK_DOMAINS.some(function (d) { return host === d || host.slice(-d.length - 1) === "." + d; });
  }
  function linkAllowed(href) {
    if (!href) return false;
    if (/^#/.test(href) || /^\/(?![\/\\])/.test(href)) return true;
    let url;
    try { url = new URL(href, location.href); } catch (e) { return false; }
    if (url.protocol === "mailto:") return hostAllowed(url.pathname.split("@").pop());
    if (url.protocol !== "https:" && url.protocol !== "http:") return false;
    return hostAllowed(url.hostname);
  }
  DOMPurify.addHook("afterSanitizeAttributes", function (node) {
    if (node.tagName === "A") {
      if (!linkAllowed(node.getAttribute("href"))) {
        node.removeAttribute("href");
        node.setAttribute("data-unlisted", "");
        return;
      }
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
  // Images never render, whatever produced the tag (marked already writes their alt text).
  DOMPurify.addHook("uponSanitizeElement", function (node, data) {
    if (data.tagName === "img" || data.tagName === "image" || data.tagName === "picture") {
      node.parentNode && node.parentNode.removeChild(node);
    }
  });
  const PURIFY = {
    ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "code", "pre", "ul", "ol", "li", "a",
      "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr",
      "th", "td", "input"],
    ALLOWED_ATTR: ["href", "title", "type", "checked", "disabled"],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|\/(?!\/)|#)/i,
  };
  function renderMarkdown(el, text) {
    el.innerHTML = DOMPurify.sanitize(marked.parse(text || ""), PURIFY);
    el.querySelectorAll("a[data-unlisted]").forEach(function (a) {
      const span = document.createElement("span");
      span.className = "unlisted-link";
      span.title = _("Not a link to one of our sites");
      span.textContent = a.textContent;
      a.replaceWith(span);
    });
  }

  // --- Outbox: every typed message lives here until the server acknowledges it. ---
  function loadOutbox() {
    try { return JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]"); } catch (e) { return []; }
  }
  let outbox = loadOutbox();
  function saveOutbox() { localStorage.setItem(OUTBOX_KEY, JSON.stringify(outbox)); }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "c" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // --- Rendering ---
  function nearBottom() { return list.scrollHeight - list.scrollTop - list.clientHeight < 48; }
  list.addEventListener("scroll", function () { pinned = nearBottom(); });
  function follow() { if (pinned) list.scrollTop = list.scrollHeight; }

  function bubble(role) {
    const li = document.createElement("li");
    li.className = "msg " + role;
    const body = document.createElement("div");
    body.className = "body";
    li.appendChild(body);
    list.appendChild(li);
    follow();
    return li;
  }
  function userBubble(text, clientId, pending) {
    const li = bubble("user");
    li.querySelector(".body").textContent = text;
    if (clientId) li.dataset.clientId = clientId;
    if (pending) li.classList.add("pending");
    return li;
  }
  function statusLabel(li, status) {
    let tag = li.querySelector(".state");
    if (status === "complete" || status === "streaming" || !status) { if (tag) tag.remove(); return; }
    if (!tag) { tag = document.createElement("span"); tag.className = "state"; li.insertBefore(tag, li.firstChild); }
    tag.textContent = { stopped: _("stopped"), interrupted: _("interrupted"), error: _("failed") }[status] || status;
    li.dataset.status = status;
  }
  // Said in the answer itself: a cheaper tier was unsure and a larger one answers instead.
  function escalationNote(li, fromTier, toTier) {
    let note = li.querySelector(".escalation");
    if (!note) {
      note = document.createElement("p");
      note.className = "escalation";
      li.insertBefore(note, li.querySelector(".body"));
    }
    // Customers are not told tier names (CHAT_SHOW_DETAILS): the frame carries none then.
    if (!fromTier) { note.textContent = _("The first draft was not sure enough; a more careful answer follows."); return; }
    note.textContent = toTier
      ? fill(_("The {from} model was not sure; the {to} model answers instead."), { from: fromTier, to: toTier })
      : fill(_("The {from} model was not sure, and no larger model is left."), { from: fromTier });
  }
  function money(value) {
    if (value === undefined || value === null) return "–";
    return "$" + Number(value).toFixed(Number(value) < 0.01 ? 6 : 4);
  }
  function addText(parent, tag, text, cls) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = text;
    parent.appendChild(el);
    return el;
  }
  function showDetails(li, m) {
    li.querySelectorAll(".sources, .details, .thumbs").forEach(function (el) { el.remove(); });
    const unsure = (m.attempts || []).filter(function (a) {
      return a && (a.outcome === "low_score" || a.outcome === "dont_know");
    });
    if (unsure.length && !li.querySelector(".escalation") && !m.cached) {
      escalationNote(li, unsure[0].tier, m.abstained ? "" : m.tier);
    }
    if (m.sources && m.sources.length) {
      const div = document.createElement("div");
      div.className = "sources";
      div.appendChild(document.createTextNode(_("Sources:") + " "));
      m.sources.forEach(function (s, i) {
        const a = document.createElement("a");
        // A web page's source opens the live page; a file's, the passage page on this site.
        a.href = /^https?:\/\//i.test(s.url || "") ? s.url
          : "/passages/" + encodeURIComponent(s.chunk_id) + "/#chunk-" + encodeURIComponent(s.chunk_id);
        a.target = "_blank";
        a.rel = "noopener";
        const page = Number.isInteger(s.page) ? " (" + fill(_("page {page}"), { page: String(s.page) }) + ")" : "";
        a.textContent = "[" + s.n + "] " + s.title + (s.heading ? " › " + s.heading : "") + page;
        if (i) div.appendChild(document.createTextNode(" · "));
        div.appendChild(a);
      });
      li.appendChild(div);
    }
    if (m.usage === undefined) { if (m.id) li.appendChild(thumbs(m.id, m.feedback)); return; }
    const details = document.createElement("details");
    details.className = "details";
    addText(details, "summary", _("Details"));
    const dl = document.createElement("dl");
    function row(label, value) { addText(dl, "dt", label); addText(dl, "dd", value); }
    row(_("Answered by"), m.cached ? _("answer cache") : (m.tier || "–"));
    if (m.attempts && m.attempts.length > 1) {
      row(_("Tiers tried"), m.attempts.map(function (a) { return a.tier; }).join(" → "));
    }
    row(_("Cached"), m.cached ? _("yes") : _("no"));
    const usage = m.usage || {};
    row(_("Tokens"), fill(_("{in} in / {out} out"), { in: String(usage.tokens_in || 0), out: String(usage.tokens_out || 0) }));
    row(_("Cost"), money(m.cost) + (m.cost_if_largest ? " (" + fill(_("largest tier alone: {cost}"), { cost: money(m.cost_if_largest) }) + ")" : ""));
    if (m.standalone_question) row(_("Understood as"), m.standalone_question);
    if (m.rewrite) {
      row(_("Rewrite"), m.rewrite.tier + ", " + fill(_("{in} in / {out} out"), { in: String(m.rewrite.tokens_in), out: String(m.rewrite.tokens_out) }) +
        ", " + money(m.rewrite.cost) + " (" + _("in the cost above") + ")");
    }
    if (m.status && m.status !== "complete") row(_("Status"), m.status);
    details.appendChild(dl);
    li.appendChild(details);
    if (m.id) li.appendChild(thumbs(m.id, m.feedback));
  }
  function thumbs(messageId, current) {
    const div = document.createElement("div");
    div.className = "thumbs";
    [[1, "▲ " + _("Helpful"), _("This answer helped")], [-1, "▼ " + _("Not helpful"), _("This answer did not help")]].forEach(function (t) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "thumb";
      b.dataset.value = t[0];
      b.textContent = t[1];
      b.title = t[2];
      b.setAttribute("aria-label", t[2]);
      b.setAttribute("aria-pressed", current === t[0] ? "true" : "false");
      b.addEventListener("click", function () {
        send({ type: "feedback", message_id: messageId, value: t[0] });
      });
      div.appendChild(b);
    });
    return div;
  }
  function agentBubble(text, name, messageId) {
    const li = bubble("agent");
    if (messageId) li.dataset.messageId = messageId;
    addText(li, "p", name || T.agent, "agent-name");
    li.appendChild(li.querySelector(".body"));
    li.querySelector(".body").textContent = text;
    return li;
  }

  // --- A person: the handoff banner, the offer after a decline or a thumbs-down ---
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (_, k) { return values[k] || ""; });
  }
  function requestHandoff(reason, email) {
    const frame = { type: "handoff", reason: reason || "asked" };
    if (conversationId) frame.conversation_id = conversationId;
    if (email) frame.email = email;
    if (!send(frame)) notice(_("You are offline; ask again once we are back."));
  }
  function offerHandoff(li, reason) {
    if (!li || li.querySelector(".offer-handoff") || (handoff && handoff.status !== "closed")) return;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "offer-handoff";
    b.textContent = T.offer;
    b.addEventListener("click", function () { b.disabled = true; requestHandoff(reason); });
    li.appendChild(b);
  }
  // A read of the handoff state (loadHandoff) can come back after a newer change: a frame, or
  // another conversation opened. Reads are numbered; a change makes every read started before it
  // stale, and so does showing a read (after a reconnect a missed change is only in the newer one).
  let handoffReads = 0;
  let handoffStaleUpTo = 0;
  function handoffChanged(frame) {
    handoffStaleUpTo = handoffReads;
    showHandoff(frame);
  }
  function showHandoff(frame) {
    handoff = frame;
    if (!handoffBanner) return;
    handoffBanner.innerHTML = "";
    if (!frame) { handoffBanner.hidden = true; if (handoffButton) handoffButton.hidden = false; return; }
    const open = frame.status !== "closed";
    if (handoffButton) handoffButton.hidden = open;
    handoffBanner.hidden = false;
    handoffBanner.dataset.status = frame.status;
    const values = { agent: frame.agent || T.agent };
    addText(handoffBanner, "p", fill(T[frame.status] || frame.status, values), "handoff-state");
    if (frame.status === "waiting" && !frame.open_now && frame.reply_expected) {
      const when = new Date(frame.reply_expected).toLocaleString([], { weekday: "long", hour: "2-digit", minute: "2-digit" });
      addText(handoffBanner, "p", fill(T.away, { when: when }), "handoff-away");
    }
    if (open) {
      const cancel = addText(handoffBanner, "button", T.cancel, "handoff-cancel");
      cancel.type = "button";
      cancel.addEventListener("click", function () {
        cancel.disabled = true;
        send({ type: "handoff.cancel", conversation_id: frame.conversation_id });
      });
    }
    if (frame.status === "waiting" && frame.email) addText(handoffBanner, "p", T.email_saved, "handoff-email-saved");
    if (frame.status === "waiting" && !frame.email) {
      const form = document.createElement("form");
      form.className = "handoff-email";
      const label = addText(form, "label", T.email_prompt);
      const inputEmail = document.createElement("input");
      inputEmail.type = "email";
      inputEmail.name = "email";
      inputEmail.required = true;
      inputEmail.autocomplete = "email";
      label.appendChild(inputEmail);
      const save = addText(form, "button", T.email_save);
      save.type = "submit";
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        requestHandoff(frame.reason || "asked", inputEmail.value.trim());
      });
      handoffBanner.appendChild(form);
    }
  }
  async function loadHandoff() {
    if (!conversationId) { handoffChanged(null); return; }
    const read = ++handoffReads;
    const id = conversationId;
    try {
      const response = await apiFetch(root.dataset.api + encodeURIComponent(id) + "/handoff/");
      if (!response.ok) return;
      const data = await response.json();
      if (id === conversationId && read > handoffStaleUpTo) {
        handoffStaleUpTo = read;
        showHandoff(data.handoff && data.handoff.status !== "closed" ? data.handoff : null);
      }
      Object.keys(data.agents || {}).forEach(function (messageId) {
        const name = list.querySelector('.msg.agent[data-message-id="' + CSS.escape(messageId) + '"] .agent-name');
        if (name) name.textContent = data.agents[messageId];
      });
    } catch (e) { /* offline: shown again after reconnecting */ }
  }
  function greet() {
    if (root.dataset.greeting && !list.children.length) {
      bubble("assistant greeting").querySelector(".body").textContent = root.dataset.greeting;
    }
  }
  function apiFetch(url) {
    return fetch(url, { credentials: "same-origin", headers: visitor ? { "X-Chat-Visitor": visitor } : {} });
  }

  // After a thumbs-down: one optional reason, sent as the same feedback with a `reason`.
  const REASONS = [["wrong", _("Wrong")], ["outdated", _("Outdated")], ["not_asked", _("Not what I asked")], ["incomplete", _("Incomplete")]];
  function showReasons(frame) {
    list.querySelectorAll('[data-message-id="' + frame.message_id + '"] .thumbs').forEach(function (div) {
      let picker = div.querySelector(".reasons");
      if (frame.value !== -1) { if (picker) picker.remove(); return; }
      if (!picker) {
        picker = document.createElement("span");
        picker.className = "reasons";
        picker.setAttribute("role", "group");
        picker.setAttribute("aria-label", _("What was wrong? (optional)"));
        REASONS.forEach(function (r) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "reason";
          b.dataset.reason = r[0];
          b.textContent = r[1];
          b.addEventListener("click", function () {
            send({ type: "feedback", message_id: frame.message_id, value: -1, reason: r[0] });
          });
          picker.appendChild(b);
        });
        div.appendChild(picker);
      }
      picker.querySelectorAll(".reason").forEach(function (b) {
        b.setAttribute("aria-pressed", b.dataset.reason === frame.reason ? "true" : "false");
      });
    });
  }
  function assistantFromStored(m) {
    const li = bubble("assistant");
    li.dataset.messageId = m.id;
    renderMarkdown(li.querySelector(".body"), m.content);
    statusLabel(li, m.status);
    showDetails(li, m);
    return li;
  }

  // --- Conversations ---
  function setConversation(id) {
    conversationId = id;
    if (id) {
      localStorage.setItem(LAST_KEY, id);
      const url = new URL(location.href);
      url.searchParams.set("c", id);
      history.replaceState(null, "", url);
    }
  }
  async function refreshSidebar() {
    try {
      const response = await apiFetch(root.dataset.api);
      if (!response.ok) return;
      const data = await response.json();
      sidebar.innerHTML = "";
      data.conversations.forEach(function (c) {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = "?c=" + encodeURIComponent(c.id);
        a.textContent = c.title;
        a.dataset.id = c.id;
        if (c.id === conversationId) a.className = "current";
        a.addEventListener("click", function (event) { event.preventDefault(); openConversation(c.id); });
        li.appendChild(a);
        sidebar.appendChild(li);
      });
    } catch (e) { /* offline: the list refreshes after reconnecting */ }
  }
  async function openConversation(id) {
    if (answering) stop();
    newThread = null;
    setConversation(id);
    await reloadConversation();
    refreshSidebar();
  }
  async function reloadConversation() {
    if (!conversationId) { renderPendingOnly(); return; }
    let data;
    try {
      const response = await apiFetch(root.dataset.api + encodeURIComponent(conversationId) + "/");
      if (response.status === 404) { setConversation(null); localStorage.removeItem(LAST_KEY); renderPendingOnly(); return; }
      if (!response.ok) return;
      data = await response.json();
    } catch (e) { return; }
    if (answering) return; // a live answer is on screen: the reload after it ends catches up
    list.innerHTML = "";
    titleEl.textContent = data.title;
    data.messages.forEach(function (m) {
      if (m.role === "user") userBubble(m.content, m.client_id, false);
      else if (m.role === "agent") agentBubble(m.content, null, m.id);
      else assistantFromStored(m);
    });
    renderPendingOnly(true);
    pinned = true;
    follow();
    loadHandoff();
  }
  function renderPendingOnly(keep) {
    if (!keep) { list.innerHTML = ""; titleEl.textContent = root.dataset.title || _("Help chat"); handoffChanged(null); greet(); }
    const thread = conversationId || newThread;
    outbox.forEach(function (entry) {
      if (!thread || entry.thread !== thread) return;
      if (!list.querySelector('[data-client-id="' + CSS.escape(entry.client_id) + '"]')) {
        userBubble(entry.text, entry.client_id, true);
      }
    });
  }
  function startNewConversation() {
    if (answering) stop();
    setConversation(null);
    localStorage.removeItem(LAST_KEY);
    newThread = "new:" + newId();
    const url = new URL(location.href);
    url.searchParams.delete("c");
    history.replaceState(null, "", url);
    list.innerHTML = "";
    titleEl.textContent = _("New conversation");
    handoffChanged(null);
    greet();
    refreshSidebar();
    input.focus();
  }

  // --- Socket ---
  function online() { return socket && socket.readyState === WebSocket.OPEN; }
  function send(frame) {
    if (!online()) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }
  function setAnswering(state) {
    answering = state;
    stopButton.hidden = !state;
    sendButton.hidden = !!state;
  }
  function flush() {
    if (!online() || inFlight || answering || !outbox.length) return;
    const entry = outbox[0];
    const frame = { type: "ask", text: entry.text, client_id: entry.client_id };
    if (entry.thread && entry.thread.indexOf("new:") !== 0) frame.conversation_id = entry.thread;
    inFlight = entry;
    send(frame);
  }
  function acknowledged(frame) {
    const entry = outbox.find(function (e) { return e.client_id === frame.client_id; });
    if (entry && entry.thread && entry.thread.indexOf("new:") === 0) {
      // Later messages typed into the same new conversation go to the one just created.
      const token = entry.thread;
      outbox.forEach(function (e) { if (e.thread === token) e.thread = frame.conversation_id; });
      if (newThread === token) newThread = null;
    }
    if (inFlight && inFlight.client_id === frame.client_id) inFlight.acked = true;
    outbox = outbox.filter(function (e) { return e.client_id !== frame.client_id; });
    saveOutbox();
    const li = list.querySelector('[data-client-id="' + CSS.escape(frame.client_id) + '"]');
    if (li) { li.classList.remove("pending"); li.dataset.messageId = frame.message_id; }
    if (!conversationId || conversationId === frame.conversation_id || (entry && entry.thread === frame.conversation_id)) {
      setConversation(frame.conversation_id);
    }
    refreshSidebar();
    if (frame.duplicate) {
      // Stored before the socket dropped: show what the server has instead of asking again.
      inFlight = null;
      reloadConversation().then(flush);
    }
  }
  function askFailed(frame) {
    const entry = inFlight;
    inFlight = null;
    if (frame.code === "busy" || frame.code === "rate_limited" || frame.code === "unavailable") {
      // Not stored: keep it queued and try again shortly.
      clearTimeout(retryTimer);
      retryTimer = setTimeout(flush, { busy: 1000, unavailable: 5000 }[frame.code] || 15000);
      notice(frame.message);
      return;
    }
    outbox = outbox.filter(function (e) { return e.client_id !== entry.client_id; });
    saveOutbox();
    const li = list.querySelector('[data-client-id="' + CSS.escape(entry.client_id) + '"]');
    if (li) { li.classList.remove("pending"); li.classList.add("rejected"); }
    notice(frame.message);
    flush();
  }
  function notice(text) {
    const li = bubble("assistant error");
    li.querySelector(".body").textContent = text;
  }
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(function () {
      renderQueued = false;
      if (!answering) return;
      const body = answering.li.querySelector(".body");
      body.classList.toggle("typing", !answering.text);
      renderMarkdown(body, answering.text);
      follow();
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "ask.ack":
        acknowledged(frame);
        // A person holds the conversation (or was just asked for): no bot answer follows.
        if (frame.held && inFlight && inFlight.client_id === frame.client_id) { inFlight = null; flush(); }
        break;
      case "handoff.status":
        if (!conversationId || frame.conversation_id === conversationId) {
          if (!conversationId) { newThread = null; setConversation(frame.conversation_id); refreshSidebar(); }
          handoffChanged(frame);
        }
        break;
      case "agent.message":
        if (frame.conversation_id === conversationId) {
          agentBubble(frame.text, frame.agent, frame.message_id);
          follow();
          // A person wrote: the widget opens itself if it was folded into its bubble.
          root.dispatchEvent(new CustomEvent("chat:attention"));
        } else refreshSidebar();
        break;
      case "answer.start": {
        const li = bubble("assistant");
        li.dataset.messageId = frame.message_id;
        li.querySelector(".body").classList.add("typing");
        setAnswering({ li: li, text: "", messageId: frame.message_id });
        if (frame.conversation_id && !conversationId) setConversation(frame.conversation_id);
        break;
      }
      case "answer.delta":
        if (!answering) break;
        answering.text += frame.text;
        scheduleRender();
        break;
      case "answer.escalate":
        if (!answering) break;
        // The cascade threw this draft away: a larger tier answers from scratch.
        answering.text = "";
        answering.li.querySelector(".body").innerHTML = "";
        answering.li.querySelector(".body").classList.add("typing");
        answering.li.dataset.escalated = frame.to_tier;
        escalationNote(answering.li, frame.from_tier, frame.to_tier);
        break;
      case "answer.end": {
        const state = answering;
        setAnswering(null);
        inFlight = null;
        if (state) {
          renderMarkdown(state.li.querySelector(".body"), state.text);
          state.li.querySelector(".body").classList.remove("typing");
          statusLabel(state.li, frame.status);
          showDetails(state.li, Object.assign({ id: frame.message_id }, frame));
          if (frame.abstained) offerHandoff(state.li, "declined");
          follow();
        }
        // A stop's end frame is short: the stored message has the full details.
        if (frame.status === "stopped" && !frame.usage) reloadConversation().then(flush);
        else flush();
        break;
      }
      case "feedback.ok":
        list.querySelectorAll('[data-message-id="' + frame.message_id + '"] .thumb').forEach(function (b) {
          b.setAttribute("aria-pressed", Number(b.dataset.value) === frame.value ? "true" : "false");
        });
        showReasons(frame);
        if (frame.value === -1) offerHandoff(list.querySelector('.msg.assistant[data-message-id="' + frame.message_id + '"]'), "thumbs_down");
        break;
      case "error":
        if (inFlight && !inFlight.acked && !answering) { askFailed(frame); break; }
        notice(frame.message);
        if (inFlight && inFlight.acked && !answering) { inFlight = null; flush(); }
        break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.wsPath + (visitor ? "?visitor=" + encodeURIComponent(visitor) : ""));
    socket.onopen = async function () {
      retries = 0;
      statusEl.textContent = _("online");
      banner.hidden = true;
      root.classList.remove("offline");
      // What happened while we were away (an interrupted answer, a stored message) comes first.
      await reloadConversation();
      refreshSidebar();
      flush();
    };
    socket.onclose = function () {
      statusEl.textContent = _("offline");
      banner.hidden = false;
      root.classList.add("offline");
      if (answering) {
        statusLabel(answering.li, "interrupted");
        answering.li.querySelector(".body").classList.remove("typing");
        setAnswering(null);
      }
      inFlight = null; // still in the outbox: resent (and deduplicated) after reconnecting
      const delay = Math.min(10000, 500 * Math.pow(2, retries++)) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
    socket.onmessage = function (event) {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    };
  }

  function stop() {
    if (answering) send({ type: "stop" });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const entry = { client_id: newId(), text: text, thread: conversationId || newThread || (newThread = "new:" + newId()) };
    outbox.push(entry);
    saveOutbox();
    userBubble(text, entry.client_id, true);
    pinned = true;
    follow();
    input.value = "";
    flush();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") stop();
  });
  stopButton.addEventListener("click", stop);
  if (handoffButton) handoffButton.addEventListener("click", function () { requestHandoff("asked"); });
  document.getElementById("new-conversation").addEventListener("click", startNewConversation);

  const fromUrl = new URL(location.href).searchParams.get("c");
  conversationId = fromUrl || localStorage.getItem(LAST_KEY) || null;
  if (!conversationId) {
    // Messages queued for a new conversation before a reload keep their thread.
    const pendingNew = outbox.find(function (e) { return e.thread && e.thread.indexOf("new:") === 0; });
    newThread = pendingNew ? pendingNew.thread : null;
  }
  reloadConversation();
  refreshSidebar();
  connect();
})();
