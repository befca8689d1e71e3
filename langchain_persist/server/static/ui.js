// langchain-persist viewer: the little the pages need beyond HTML. Plain JavaScript, no build.
// - the runs list and a running run's page follow what happens, over server-sent events;
// - the action forms (answer, resume, fork) call the API's resume endpoint and open the new run.
// With an API token, the token sits in a same-site cookie (the viewer asked for it once); it is
// sent to the API as the bearer header, never in a URL.
(function () {
  "use strict";

  function token() {
    var m = document.cookie.match(/(?:^|;\s*)langchain_persist_token=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function apiHeaders(json) {
    var h = { "Accept": "text/event-stream" };
    if (json) h["Content-Type"] = "application/json";
    var t = token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  }

  // Read a server-sent event stream from a fetch() response (EventSource cannot send headers).
  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      var frames = buffer.split(/\r?\n\r?\n/);
      buffer = frames.pop();
      frames.forEach(function (frame) {
        var name = "message", data = [];
        frame.split(/\r?\n/).forEach(function (line) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        });
        if (data.length) {
          try { onEvent(name, JSON.parse(data.join("\n"))); } catch (e) { /* not JSON: skip */ }
        }
      });
    }
  }

  // -- the runs list: rows of running runs update; new runs are announced -------------------
  function liveRuns() {
    var note = document.getElementById("live-note");
    if (!note || !note.dataset.live || !window.EventSource) return;
    var source = new EventSource(note.dataset.live);
    source.addEventListener("run", function (e) {
      var d = JSON.parse(e.data);
      var row = document.getElementById("run-" + d.id);
      if (!row) return;
      var t = document.createElement("template");
      t.innerHTML = d.html.trim();  // rendered (and escaped) by the server's own template
      if (t.content.firstElementChild) row.replaceWith(t.content.firstElementChild);
    });
    source.addEventListener("new", function (e) {
      var d = JSON.parse(e.data);
      note.textContent = "";
      if (!d.count) return;
      var a = document.createElement("a");
      a.href = location.href;
      a.textContent = (d.count >= 50 ? "50+" : d.count) + " new run" + (d.count === 1 ? "" : "s") +
        " since this page loaded: show them";
      note.append(a);
    });
    source.addEventListener("done", function () { source.close(); });
  }

  // -- a running run: its events as they happen, then the finished page ---------------------
  var SAY = {
    start: function () { return "▶ started"; },
    thinking: function (d) { return "… " + (d.model || "the model") + " is thinking (step " + d.step + ")"; },
    tool_start: function (d) { return "⚒ " + d.tool + " started"; },
    tool_end: function (d) { return "✔ " + d.tool + " finished in " + Math.round(d.durationMs) + " ms"; },
    tool_error: function (d) {
      return (d.handled ? "⚠ " + d.tool + " returned an error to the model: " : "✘ " + d.tool + " raised: ") + d.error;
    },
    retry: function (d) { return "↻ retrying (attempt " + d.attempt + " of " + d.maxAttempts + ") after " + d.error; },
    warning: function (d) { return "⚠ " + d.message; },
    complete: function (d) { return d.interrupts ? "❚❚ stopped at interrupt(): waiting for a human" : "✔ completed"; },
    error: function (d) { return "✘ failed: " + d.message; }
  };

  function liveRun() {
    var box = document.querySelector("section.live[data-execution]");
    if (!box) return;
    var list = box.querySelector(".events");
    var typing = null;
    function add(text) {
      var li = document.createElement("li");
      li.textContent = text;
      list.append(li);
      list.scrollTop = list.scrollHeight;
      return li;
    }
    function finished() { setTimeout(function () { location.reload(); }, 300); }
    function poll() {  // not run by this server (or read-only): watch the stored result
      var source = new EventSource("/ui/live?run=" + encodeURIComponent(box.dataset.result));
      source.addEventListener("run", function (e) {
        if (JSON.parse(e.data).status !== "running") { source.close(); finished(); }
      });
      source.addEventListener("done", function () { source.close(); finished(); });
    }
    if (document.body.dataset.actions !== "on") { poll(); return; }
    var url = "/api/executions/" + encodeURIComponent(box.dataset.execution) + "/events";
    fetch(url, { headers: apiHeaders(false) }).then(function (response) {
      if (!response.ok) { poll(); return; }
      return readEvents(response, function (name, data) {
        if (name === "token") {
          typing = typing || add("✎ ");
          typing.textContent += data.token;
          return;
        }
        typing = null;
        if (SAY[name]) add(SAY[name](data));
      }).then(finished);
    }).catch(poll);
  }

  // -- actions: answer an interrupt, resume a failed run, fork from a checkpoint ------------
  function actions() {
    document.querySelectorAll("form[data-action]").forEach(function (form) {
      form.addEventListener("submit", async function (event) {
        event.preventDefault();
        var out = form.querySelector(".result");
        var button = form.querySelector("button");
        function say(text, bad) { out.textContent = text; out.classList.toggle("bad", !!bad); }
        var body = { checkpointId: form.dataset.checkpoint };
        if (form.dataset.action === "answer") {
          try { body.resume = JSON.parse(form.elements.resume.value); } catch (e) {
            say("✘ That is not JSON (" + e.message + "): write a JSON value, such as {\"approved\": true} or \"yes\".", true);
            form.elements.resume.focus();
            return;
          }
          if (body.resume === null) { say("✘ null cannot resume a run: give another JSON value.", true); return; }
        } else {
          var text = form.elements.instructions.value.trim();
          if (text) body.additionalInstructions = text;
        }
        button.disabled = true;
        say("◔ starting…");
        var controller = new AbortController();
        try {
          var response = await fetch("/api/agents/" + encodeURIComponent(form.dataset.agent) + "/resume", {
            method: "POST", headers: apiHeaders(true), body: JSON.stringify(body), signal: controller.signal
          });
          if (!response.ok) {
            var detail = response.statusText;
            try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
            if (typeof detail !== "string") detail = JSON.stringify(detail);
            say("✘ " + response.status + ": " + detail, true);
            button.disabled = false;
            return;
          }
          var id = response.headers.get("X-Execution-Id");
          controller.abort();  // the run goes on in the server; its own page follows it
          say("▶ started run " + id + ": opening it…");
          location.href = "/runs/" + encodeURIComponent(id);
        } catch (e) {
          if (e.name === "AbortError") return;
          say("✘ " + e.message, true);
          button.disabled = false;
        }
      });
    });
  }

  liveRuns();
  liveRun();
  actions();
})();
