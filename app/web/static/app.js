// Polls the index progress; no inline script (the CSP forbids it).
(function () {
  var bar = document.getElementById("progress");
  if (!bar) return;
  var text = document.getElementById("progress-text");
  function poll() {
    fetch(bar.dataset.statusUrl, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        var p = body.progress;
        bar.max = p.total || 1; bar.value = p.done;
        text.textContent = p.done + " of " + p.total + (p.state === "ready" ? " (ready)" : "");
        if (p.state !== "ready" && p.state !== "failed") setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  poll();
})();
