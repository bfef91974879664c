// Inside the widget's iframe: the bubble opens and closes the chat and tells the host page's
// loader (widget.js) how big to make the frame. The state lasts across the host's page loads.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  const KEY = "widget.open:" + location.pathname;
  const framed = window.parent !== window;
  document.documentElement.lang = root.dataset.lang || "en";
  document.body.classList.add("widget");
  function set(open, focus) {
    document.body.classList.toggle("closed", !open);
    try { sessionStorage.setItem(KEY, open ? "1" : "0"); } catch (e) { /* storage off: state lasts this page */ }
    // Only the size changes hands; nothing private goes to the host page.
    if (framed) window.parent.postMessage({ type: "chat-widget", state: open ? "open" : "closed" }, "*");
    if (open && focus) document.getElementById("ask-input").focus({ preventScroll: true });
  }
  let stored = null;
  try { stored = sessionStorage.getItem(KEY); } catch (e) { stored = null; }
  set(!framed || stored === "1");
  document.getElementById("widget-open").addEventListener("click", function () { set(true, true); });
  document.getElementById("widget-close").addEventListener("click", function () { set(false); });
  root.addEventListener("chat:attention", function () { set(true); });
})();
