// The chat widget loader: one script tag on any page of a configured site,
//   <script src="https://CHAT-HOST/widget.js" data-site="SITE-KEY" async></script>
// adds a chat bubble in the corner. The chat itself is this app's own page in an iframe (same
// streaming, sources, stop and handoff; its socket and storage stay on the chat's origin);
// this script only sizes the frame when the bubble opens or closes.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.getAttribute("data-site")) {
    if (window.console) console.error("chat widget: the script tag needs data-site=\"<site key>\"");
    return;
  }
  var base = new URL(script.src, location.href).origin;
  var frame = document.createElement("iframe");
  frame.className = "chat-widget-frame";
  frame.title = script.getAttribute("data-title") || "Chat";
  frame.src = base + "/widget/" + encodeURIComponent(script.getAttribute("data-site")) + "/";
  frame.style.cssText = "position:fixed;right:12px;bottom:12px;width:76px;height:76px;border:0;" +
    "z-index:2147483000;background:transparent;color-scheme:normal;";
  function size(open) {
    var narrow = window.innerWidth < 480;
    frame.style.width = open ? (narrow ? "calc(100vw - 24px)" : "380px") : "76px";
    frame.style.height = open ? (narrow ? "calc(100vh - 24px)" : "min(600px, calc(100vh - 24px))") : "76px";
  }
  window.addEventListener("message", function (event) {
    // Only the chat's own frame may resize it.
    if (event.origin !== base || event.source !== frame.contentWindow) return;
    if (!event.data || event.data.type !== "chat-widget") return;
    size(event.data.state === "open");
  });
  function mount() { document.body.appendChild(frame); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
