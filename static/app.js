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
    // On a phone the menu scrolls sideways: bring the current page's link into view.
    var current = document.querySelector(".top nav [aria-current]");
    if (current) current.parentElement.scrollLeft = current.offsetLeft - current.parentElement.offsetLeft - 16;
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
