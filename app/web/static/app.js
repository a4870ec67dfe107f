// Page behaviour. No inline script anywhere: the CSP forbids it.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Draft: choose a citation (or a sentence) to show its passage beside the draft, no page load.
  var grid = document.getElementById("review-grid");
  if (grid) {
    var sentences = Array.prototype.slice.call(document.querySelectorAll("#sentences .sentence"));
    var clearAll = function (selector, cls) {
      Array.prototype.forEach.call(document.querySelectorAll(selector), function (el) { el.classList.remove(cls); });
    };
    var showCite = function (link, moveFocus) {
      var n = link.dataset.cite, panel = document.getElementById(link.dataset.panel);
      if (!panel) return;
      clearAll(".src-panel.shown", "shown"); clearAll("mark.cited.on", "on");
      clearAll("a.cite.current", "current"); clearAll(".sentence.current", "current");
      panel.classList.add("shown");
      Array.prototype.forEach.call(panel.querySelectorAll("mark.k" + n), function (m) { m.classList.add("on"); });
      Array.prototype.forEach.call(document.querySelectorAll('a.cite[data-cite="' + n + '"]'),
        function (a) { a.classList.add("current"); a.setAttribute("aria-current", "true"); });
      var sentence = link.closest(".sentence");
      if (sentence) sentence.classList.add("current");
      var mark = panel.querySelector("mark.k" + n) || document.getElementById("c" + n);
      if (mark) {  // scroll the source pane, then this page only (never the EHR page around the frame)
        var pane = document.getElementById("source-pane");
        var top = mark.getBoundingClientRect().top - pane.getBoundingClientRect().top + pane.scrollTop;
        pane.scrollTop = Math.max(0, top - pane.clientHeight / 3);
        var r = mark.getBoundingClientRect();
        if (r.top < 0 || r.bottom > window.innerHeight) window.scrollBy(0, r.top - window.innerHeight / 3);
      }
      if (moveFocus) panel.focus({ preventScroll: true });
      history.replaceState(null, "", "#c" + n);
    };
    grid.addEventListener("click", function (ev) {
      var link = ev.target.closest("a.cite");
      if (link) { ev.preventDefault(); Array.prototype.forEach.call(document.querySelectorAll("a.cite[aria-current]"),
        function (a) { a.removeAttribute("aria-current"); }); showCite(link, false); return; }
      var sentence = ev.target.closest(".sentence");
      if (sentence) {
        var first = sentence.querySelector("a.cite");
        if (first) showCite(first, false);
        else { clearAll(".sentence.current", "current"); sentence.classList.add("current"); }
      }
    });
    // Up and down arrows between sentences: focus the next sentence's first citation and show it.
    document.getElementById("sentences").addEventListener("keydown", function (ev) {
      if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
      var here = ev.target.closest(".sentence"), i = sentences.indexOf(here);
      if (i < 0) return;
      var next = sentences[i + (ev.key === "ArrowDown" ? 1 : -1)];
      if (!next) return;
      ev.preventDefault();
      var link = next.querySelector("a.cite");
      if (link) { link.focus(); showCite(link, false); }
      else { next.setAttribute("tabindex", "-1"); next.focus(); clearAll(".sentence.current", "current"); next.classList.add("current"); }
    });
    var start = /^#c(\d+)$/.exec(window.location.hash);
    var opened = start && document.querySelector('a.cite[data-cite="' + start[1] + '"]');
    if (opened) showCite(opened, false);
  }

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
          var done = p.state === "ready" || p.state === "failed" || p.state === "cancelled";
          text.textContent = p.done + " of " + p.total + (done ? " (" + p.state + ")" : "");
          var cancelIndex = document.getElementById("cancel-index");
          if (done && cancelIndex) cancelIndex.form.hidden = true;  // nothing left to cancel
          if (!done) setTimeout(poll, 1000);
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
