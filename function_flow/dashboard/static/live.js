// Live updates for the run and task pages: poll the page's JSON, change
// classes and text in place (never innerHTML), reload when the page's shape
// or the run's status changed, stop once the run has ended.
"use strict";
(function () {
  var page = document.querySelector("main[data-live-url]");
  if (!page) { return; }
  var url = page.getAttribute("data-live-url");
  var interval = Math.max(1, parseFloat(page.getAttribute("data-interval")) || 2) * 1000;

  function setStatus(element, base, status) {
    element.setAttribute("class", base + " st-" + status);
  }

  function updateRun(state) {
    if (state.shape !== page.getAttribute("data-shape") ||
        state.status !== page.getAttribute("data-status")) {
      window.location.reload();
      return false;
    }
    document.querySelectorAll("[data-live]").forEach(function (element) {
      var value = state[element.getAttribute("data-live")];
      if (typeof value === "string") { element.textContent = value; }
    });
    document.querySelectorAll("[data-node]").forEach(function (element) {
      var node = state.nodes[element.getAttribute("data-node")];
      if (!node) { return; }
      setStatus(element, element.getAttribute("data-base"), node[0]);
      var note = element.querySelector("[data-note]");
      if (note) { note.textContent = node[1]; }
    });
    document.querySelectorAll("[data-bar]").forEach(function (bar) {
      var node = state.nodes[bar.getAttribute("data-bar")];
      if (!node) { return; }
      var fractions = {};
      node[2].forEach(function (pair) { fractions[pair[0]] = pair[1]; });
      var x = parseFloat(bar.getAttribute("data-x"));
      var width = parseFloat(bar.getAttribute("data-width"));
      bar.querySelectorAll("[data-seg]").forEach(function (segment) {
        var size = width * (fractions[segment.getAttribute("data-seg")] || 0);
        segment.setAttribute("x", x.toFixed(1));
        segment.setAttribute("width", size.toFixed(1));
        x += size;
      });
    });
    document.querySelectorAll("[data-cell]").forEach(function (cell) {
      var cells = state.cells[cell.getAttribute("data-cell")] || [];
      var status = cells[parseInt(cell.getAttribute("data-index"), 10)];
      if (status) { setStatus(cell, "cell", status); }
    });
    document.querySelectorAll("tr[data-row]").forEach(function (row) {
      var cells = state.rows[row.getAttribute("data-row")];
      if (!cells) { return; }
      row.querySelectorAll("[data-col]").forEach(function (td) {
        var value = cells[parseInt(td.getAttribute("data-col"), 10)];
        var badge = td.querySelector(".badge");
        if (badge) {
          setStatus(badge, "badge", value);
          badge.textContent = value;
        } else {
          td.textContent = value;
        }
      });
    });
    return !state.final;
  }

  function updateTask(state) {
    if (state.status !== page.getAttribute("data-status") ||
        String(state.attempt) !== page.getAttribute("data-attempt")) {
      window.location.reload();
      return false;
    }
    return true;
  }

  function poll() {
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (state === null) { return; }
        var again = page.id === "task-page" ? updateTask(state) : updateRun(state);
        if (again) { window.setTimeout(poll, interval); }
      })
      .catch(function () { window.setTimeout(poll, interval * 2); });
  }

  if (page.getAttribute("data-final") !== "yes") { window.setTimeout(poll, interval); }
}());
