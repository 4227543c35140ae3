// docutrain dashboard: refresh the live part of the page every few seconds
// without a full reload. The server renders it (escaped) and we swap it in.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("refresh-status");
  if (!live) return;
  var every = (Number(live.getAttribute("data-refresh")) || 3) * 1000;

  function say(text, bad) {
    if (!status) return;
    status.textContent = text; // text only: never markup
    status.className = bad ? "warn" : "muted";
  }

  function refresh() {
    if (document.hidden) return later(); // no work for a tab nobody looks at
    if (typing()) return later(); // do not wipe a search being typed
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        // 503: the server explains (queue unreachable) in the same fragment.
        if (!response.ok && response.status !== 503) { say("refresh failed (" + response.status + ")", true); return null; }
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        // The server's time, in the format and zone of every time on the page.
        var asOf = live.querySelector("[data-as-of]");
        say(asOf ? "updated " + asOf.getAttribute("data-as-of") : "updated", false);
      })
      .catch(function () { say("cannot reach the server; retrying", true); })
      .then(later);
  }

  function typing() {
    var el = document.activeElement;
    return el && live.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }

  function later() { window.setTimeout(refresh, every); }
  later();
})();
