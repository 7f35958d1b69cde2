// Renders the admin API's OpenAPI document with the vendored Swagger UI (no inline script:
// the dashboard's CSP allows scripts from 'self' only).
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: false,
  });
});
