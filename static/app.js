// KeyRelay dashboard: the only script besides htmx. Loaded from static/ (CSP: script-src 'self'),
// in <head> without defer so the chosen theme applies before the first paint.

// Colour theme: "auto" follows the system (prefers-color-scheme); the header's button
// switches to the other theme, then the system's one, then back to auto. Kept per browser.
(function () {
  var root = document.documentElement;
  var KEY = "keyrelay-theme";
  var system = window.matchMedia("(prefers-color-scheme: dark)");

  function stored() {
    try { return localStorage.getItem(KEY) || "auto"; } catch (e) { return "auto"; }
  }
  function store(mode) {
    try { localStorage.setItem(KEY, mode); } catch (e) { /* private mode: this page only */ }
  }
  function apply(mode) {
    if (mode === "auto") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", mode);
  }
  function next(mode) {
    var own = system.matches ? "dark" : "light";
    var other = own === "dark" ? "light" : "dark";
    return mode === "auto" ? other : mode === other ? own : "auto";
  }
  function label(button, mode) {
    var word = document.createElement("span");
    word.className = "theme-word";
    word.textContent = "Theme: ";
    button.replaceChildren(word, mode);
    button.title = "Colour theme: " + (mode === "auto" ? "follows the system" : mode) +
      ". Click for " + next(mode) + ".";
  }

  apply(stored());
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.querySelector("[data-theme-toggle]");
    if (button) {
      label(button, stored());
      button.hidden = false;
    }
    // A chart that scrolls sideways (phone) starts at its right end: the latest days.
    document.querySelectorAll(".chart .plot").forEach(function (plot) {
      plot.scrollLeft = plot.scrollWidth;
    });
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-theme-toggle]");
    if (!button) return;
    var mode = next(stored());
    store(mode);
    apply(mode);
    label(button, mode);
  });
})();

// A button with data-copy="<input id>" copies that input's value to the clipboard.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var field = document.getElementById(button.getAttribute("data-copy"));
  if (!field) return;
  var done = function () { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, function () {
      field.select();
      document.execCommand("copy");
      done();
    });
  } else {
    field.select();
    document.execCommand("copy");
    done();
  }
});

// A table stacked into cards (a narrow screen) hides its header row, so each cell says what
// it is: its column's header, copied to data-label (CSS shows it). Cells that name
// themselves (the template set data-label, or the header is empty) are left as they are.
// Run again after htmx brings rows in (a key's test, a request's attempts, the live overview).
function labelCells(root) {
  root.querySelectorAll(".table-wrap > table").forEach(function (table) {
    if (table.classList.contains("stack") || !table.tHead || !table.tHead.rows.length) return;
    var heads = [];
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      for (var i = 0; i < th.colSpan; i++) heads.push(th.textContent.trim());
    });
    Array.prototype.forEach.call(table.tBodies, function (body) {
      Array.prototype.forEach.call(body.rows, function (row) {
        var column = 0;
        Array.prototype.forEach.call(row.cells, function (cell) {
          var head = cell.colSpan === 1 ? heads[column] : "";
          if (head && !cell.hasAttribute("data-label")) cell.setAttribute("data-label", head);
          column += cell.colSpan;
        });
      });
    });
  });
}
document.addEventListener("DOMContentLoaded", function () { labelCells(document); });
document.addEventListener("htmx:afterSettle", function () { labelCells(document); });
