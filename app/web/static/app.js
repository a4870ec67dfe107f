// Page behaviour. No inline script anywhere: the CSP forbids it.
(function () {
  "use strict";

  // Chart: live index progress.
  var bar = document.getElementById("progress");
  if (bar) {
    var text = document.getElementById("progress-text");
    var poll = function () {
      fetch(bar.dataset.statusUrl, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          var p = body.progress;
          bar.max = p.total || 1; bar.value = p.done;
          text.textContent = p.done + " of " + p.total +
            (p.state === "ready" ? " (ready)" : p.state === "failed" ? " (failed: reload to retry)" : "");
          if (p.state !== "ready" && p.state !== "failed") setTimeout(poll, 1000);
        })
        .catch(function () { setTimeout(poll, 3000); });
    };
    poll();
  }

  // Chart: say that drafting started, and do not submit twice.
  var draftButton = document.getElementById("draft-button");
  if (draftButton) {
    draftButton.form.addEventListener("submit", function () {
      draftButton.disabled = true;
      document.getElementById("draft-busy").textContent = "Starting the agent…";
    });
  }

  // Run page: poll until the draft is ready, then open it.
  var run = document.getElementById("run");
  if (run && (run.dataset.state === "running" || run.dataset.state === "writing")) {
    var state = document.getElementById("run-state");
    var check = function () {
      fetch(run.dataset.statusUrl, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          if (body.state === "done" && body.draft_url) { window.location.assign(body.draft_url); return; }
          if (body.state === "running" || body.state === "writing") { setTimeout(check, 700); return; }
          window.location.reload();
        })
        .catch(function () { setTimeout(check, 2000); });
    };
    state.dataset.polling = "1";
    check();
  }
})();
