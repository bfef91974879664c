// Thin chat client: sends `ask`, renders the stream as it arrives (text only; markdown comes later).
(function () {
  "use strict";
  const root = document.getElementById("chat");
  const list = document.getElementById("messages");
  const form = document.getElementById("ask-form");
  const input = document.getElementById("ask-input");
  const status = document.getElementById("status");
  let socket = null;
  let current = null;
  let conversationId = null;

  function bubble(role, text) {
    const li = document.createElement("li");
    li.className = "msg " + role;
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text || "";
    li.appendChild(body);
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    return li;
  }

  function showSources(li, sources) {
    if (!sources || !sources.length) return;
    const div = document.createElement("div");
    div.className = "sources";
    div.appendChild(document.createTextNode("Sources: "));
    sources.forEach(function (s, i) {
      const a = document.createElement("a");
      a.href = s.url;
      a.textContent = "[" + s.n + "] " + s.title + (s.heading ? " › " + s.heading : "");
      a.target = "_blank";
      if (i) div.appendChild(document.createTextNode(" · "));
      div.appendChild(a);
    });
    li.appendChild(div);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onopen = function () { status.textContent = "online"; };
    socket.onclose = function () { status.textContent = "offline"; setTimeout(connect, 1500); };
    socket.onmessage = function (event) {
      const frame = JSON.parse(event.data);
      if (frame.type === "answer.start") {
        conversationId = frame.conversation_id;
        current = bubble("assistant", "");
        current.dataset.messageId = frame.message_id;
      } else if (frame.type === "answer.delta" && current) {
        current.querySelector(".body").textContent += frame.text;
        list.scrollTop = list.scrollHeight;
      } else if (frame.type === "answer.end" && current) {
        showSources(current, frame.sources);
        current = null;
      } else if (frame.type === "error") {
        bubble("assistant error", frame.message);
      }
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    bubble("user", text);
    const frame = { type: "ask", text: text };
    if (conversationId) frame.conversation_id = conversationId;
    socket.send(JSON.stringify(frame));
    input.value = "";
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  connect();
})();
