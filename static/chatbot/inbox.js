// The agents' inbox: a live list of handoffs over /ws/inbox/; open one, take it, write, close.
(function () {
  "use strict";
  const root = document.getElementById("inbox");
  const listEl = document.getElementById("inbox-list");
  const detailEl = document.getElementById("inbox-detail");
  const statusEl = document.getElementById("inbox-status");
  const errorEl = document.getElementById("inbox-error");
  const rows = new Map(); // handoff id -> row
  let current = null; // the open handoff's detail
  let socket = null;
  let retries = 0;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }
  function since(iso) {
    const minutes = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 60000));
    return minutes < 60 ? minutes + " min" : Math.round(minutes / 60) + " h";
  }
  function renderList() {
    listEl.innerHTML = "";
    const order = { waiting: 0, joined: 1, closed: 2 };
    Array.from(rows.values())
      .sort(function (a, b) { return order[a.status] - order[b.status] || a.created_at.localeCompare(b.created_at); })
      .forEach(function (h) {
        const li = el("li");
        li.dataset.id = h.id;
        li.dataset.status = h.status;
        if (current && current.id === h.id) li.className = "current";
        const top = el("div");
        top.appendChild(el("span", h.status + (h.agent ? " · " + h.agent : ""), "state"));
        li.appendChild(top);
        li.appendChild(el("div", h.question || "(no question yet)", "question"));
        li.appendChild(el("div", [since(h.created_at) + " ago", h.site, h.email, h.outside_hours ? "outside hours" : ""].filter(Boolean).join(" · "), "meta"));
        li.addEventListener("click", function () { send({ type: "open", handoff_id: h.id }); });
        listEl.appendChild(li);
      });
  }
  function messageLi(m) {
    const li = el("li", null, m.role);
    li.dataset.messageId = m.id;
    const who = m.role === "user" ? "Customer" : m.role === "agent" ? (m.agent || "Agent") : "Bot";
    li.appendChild(el("span", who + " · " + new Date(m.created_at).toLocaleTimeString(), "who"));
    li.appendChild(document.createTextNode(m.content));
    if (m.role === "assistant") {
      const d = el("details");
      d.appendChild(el("summary", (m.abstained ? "declined" : "answered") + (m.feedback === -1 ? " · thumbs-down" : m.feedback === 1 ? " · thumbs-up" : "")));
      if (m.standalone_question) d.appendChild(el("div", "Understood as: " + m.standalone_question));
      (m.attempts || []).forEach(function (a) {
        d.appendChild(el("div", "Attempt: " + a.tier + " → " + a.outcome + (a.score !== undefined && a.score !== null ? " (score " + Number(a.score).toFixed(2) + ")" : "")));
      });
      (m.sources || []).forEach(function (s) { d.appendChild(el("div", "Source: " + s.title + (s.heading ? " › " + s.heading : ""))); });
      li.appendChild(d);
    }
    return li;
  }
  function renderDetail() {
    detailEl.innerHTML = "";
    if (!current) { detailEl.appendChild(el("p", "Choose a conversation on the left.", "help")); return; }
    const h = rows.get(current.id) || current;
    detailEl.appendChild(el("h2", h.question || "(no question yet)"));
    detailEl.appendChild(el("p", "Status: " + h.status + (h.agent ? " (" + h.agent + ")" : "") + " · reason: " + h.reason +
      (h.email ? " · e-mail: " + h.email : " · no e-mail") + (h.site ? " · site: " + h.site : ""), "handoff-meta"));
    const transcript = el("ol", null, "transcript");
    transcript.id = "transcript";
    current.transcript.forEach(function (m) { transcript.appendChild(messageLi(m)); });
    detailEl.appendChild(transcript);
    const actions = el("div", null, "submit-row");
    if (h.status === "waiting") {
      const take = el("button", "Take this conversation", "button default take");
      take.type = "button";
      take.addEventListener("click", function () { send({ type: "take", handoff_id: h.id }); });
      actions.appendChild(take);
    }
    if (h.status !== "closed") {
      const close = el("button", "Close (the bot answers again)", "button close");
      close.type = "button";
      close.addEventListener("click", function () { send({ type: "close", handoff_id: h.id }); });
      actions.appendChild(close);
    }
    detailEl.appendChild(actions);
    if (h.status === "joined" && Number(h.agent_id) === Number(root.dataset.userId || h.agent_id)) {
      const form = el("form", null, "inbox-compose");
      const text = el("textarea");
      text.name = "text";
      text.setAttribute("aria-label", "Your reply");
      text.placeholder = "Write to the customer…";
      const sendButton = el("button", "Send", "button default");
      sendButton.type = "submit";
      form.appendChild(text);
      form.appendChild(sendButton);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const value = text.value.trim();
        if (!value) return;
        send({ type: "say", handoff_id: h.id, text: value });
        text.value = "";
      });
      text.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
      });
      detailEl.appendChild(form);
      text.focus();
    }
    transcript.scrollTop = transcript.scrollHeight;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "inbox.list":
        rows.clear();
        frame.handoffs.forEach(function (h) { rows.set(h.id, h); });
        renderList();
        if (current) send({ type: "open", handoff_id: current.id });
        break;
      case "handoff.update": {
        const before = rows.get(frame.handoff.id);
        rows.set(frame.handoff.id, frame.handoff);
        renderList();
        if (current && current.id === frame.handoff.id && (!before || before.status !== frame.handoff.status || before.email !== frame.handoff.email)) {
          Object.assign(current, frame.handoff);
          renderDetail();
        }
        break;
      }
      case "handoff.detail":
        current = frame.handoff;
        rows.set(current.id, Object.assign(rows.get(current.id) || {}, frame.handoff));
        renderList();
        renderDetail();
        break;
      case "conversation.message":
        if (current && current.id === frame.handoff_id) {
          current.transcript.push(frame.message);
          const transcript = document.getElementById("transcript");
          if (transcript) { transcript.appendChild(messageLi(frame.message)); transcript.scrollTop = transcript.scrollHeight; }
        }
        break;
      case "error":
        errorEl.hidden = false;
        errorEl.textContent = frame.message;
        setTimeout(function () { errorEl.hidden = true; }, 6000);
        break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onopen = function () { retries = 0; statusEl.textContent = "live"; };
    socket.onclose = function () {
      statusEl.textContent = "offline, reconnecting…";
      setTimeout(connect, Math.min(10000, 500 * Math.pow(2, retries++)));
    };
    socket.onmessage = function (event) {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    };
  }
  connect();
})();
