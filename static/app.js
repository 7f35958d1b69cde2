// KeyRelay dashboard: the only script besides htmx. Loaded from static/ (CSP: script-src 'self').
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
