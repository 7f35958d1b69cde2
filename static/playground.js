// KeyRelay playground: sends the form to /playground/send, shows the answer as it streams
// (OpenAI chat SSE: `data: {...}` lines, then `data: [DONE]`), then the request's attempts.
// Plain fetch and a stream reader: no framework, nothing from a CDN (CSP: script-src 'self').
(function () {
  "use strict";

  function setup() {
    var form = document.getElementById("playground");
    if (!form) return;
    var answer = document.getElementById("playground-answer");
    var status = document.getElementById("playground-status");
    var meta = document.getElementById("playground-meta");
    var attempts = document.getElementById("playground-attempts");
    var button = form.querySelector("button[type=submit]");

    function showErrors(errors) {
      form.querySelectorAll("[data-error]").forEach(function (slot) {
        var name = slot.getAttribute("data-error");
        var field = form.elements[name];
        var message = errors[name] || "";
        slot.textContent = message;
        slot.hidden = !message;
        if (field) {
          if (message) field.setAttribute("aria-invalid", "true");
          else field.removeAttribute("aria-invalid");
        }
      });
    }

    function errorText(body) {
      try {
        var parsed = JSON.parse(body);
        if (parsed.error && parsed.error.message) return parsed.error.message;
      } catch (e) { /* not JSON: shown as it came */ }
      return body;
    }

    function loadAttempts(requestId) {
      if (!requestId) return Promise.resolve();
      var url = form.getAttribute("data-attempts").replace("REQUEST", encodeURIComponent(requestId));
      return fetch(url, { credentials: "same-origin" }).then(function (response) {
        return response.text().then(function (html) {
          if (!response.ok) return;
          var parsed = new DOMParser().parseFromString(html, "text/html");
          attempts.replaceChildren.apply(attempts, Array.from(parsed.body.childNodes));
        });
      });
    }

    // One SSE event's data: append the delta's text; remember usage and finish reason.
    function takeEvent(data, state) {
      if (data === "[DONE]") return;
      var chunk;
      try { chunk = JSON.parse(data); } catch (e) { return; }
      if (chunk.error) { state.error = chunk.error.message || JSON.stringify(chunk.error); return; }
      (chunk.choices || []).forEach(function (choice) {
        var delta = choice.delta || {};
        if (delta.content) answer.textContent += delta.content;
        if (choice.finish_reason) state.finish = choice.finish_reason;
      });
      if (chunk.usage) state.usage = chunk.usage;
    }

    function readStream(response, state) {
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffered = "";
      function pump() {
        return reader.read().then(function (part) {
          if (part.done) return;
          buffered += decoder.decode(part.value, { stream: true });
          var events = buffered.split(/\r?\n\r?\n/);
          buffered = events.pop();
          events.forEach(function (event) {
            event.split(/\r?\n/).forEach(function (line) {
              if (line.indexOf("data:") === 0) takeEvent(line.slice(5).trim(), state);
            });
          });
          return pump();
        });
      }
      return pump();
    }

    function summary(state, response) {
      var parts = [];
      if (state.finish) parts.push("finish reason: " + state.finish);
      if (state.usage) parts.push(state.usage.total_tokens + " tokens (" + state.usage.prompt_tokens + " in, " + state.usage.completion_tokens + " out)");
      var cost = response.headers.get("x-keyrelay-cost");
      if (cost) parts.push("cost $" + cost);
      var id = response.headers.get("x-keyrelay-request-id");
      if (id) parts.push("request " + id);
      return parts.join(" · ");
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      showErrors({});
      answer.textContent = "";
      meta.textContent = "";
      status.textContent = "Sending…";
      button.disabled = true;
      var state = { finish: null, usage: null, error: null };
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { "X-CSRFToken": form.elements.csrf_token.value }
      }).then(function (response) {
        var requestId = response.headers.get("x-keyrelay-request-id");
        var type = response.headers.get("content-type") || "";
        var done;
        if (response.status === 400 && type.indexOf("application/json") === 0) {
          done = response.json().then(function (body) {
            if (body.errors) { showErrors(body.errors); status.textContent = "Check the fields marked."; return; }
            status.textContent = "Refused: " + ((body.error && body.error.message) || response.status);
          });
          return done.then(function () { return loadAttempts(requestId); });
        }
        if (type.indexOf("text/event-stream") === 0) {
          status.textContent = "Streaming…";
          done = readStream(response, state).then(function () {
            status.textContent = state.error ? "Stopped: " + state.error : "Done (HTTP " + response.status + ").";
          });
        } else {
          done = response.text().then(function (body) {
            if (!response.ok) { status.textContent = "HTTP " + response.status + ": " + errorText(body); return; }
            try {
              var reply = JSON.parse(body);
              var choice = (reply.choices || [])[0] || {};
              answer.textContent = (choice.message && choice.message.content) || "";
              state.finish = choice.finish_reason || null;
              state.usage = reply.usage || null;
            } catch (e) { answer.textContent = body; }
            status.textContent = "Done (HTTP " + response.status + ").";
          });
        }
        return done.then(function () {
          meta.textContent = summary(state, response);
          return loadAttempts(requestId);
        });
      }).catch(function (error) {
        status.textContent = "Not sent: " + error;
      }).finally(function () {
        button.disabled = false;
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
