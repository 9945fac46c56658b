// The dashboard's only script: live updates over server-sent events, the windowed log view
// (ANSI colours, line anchors, search), form checks and keyboard shortcuts. No build step;
// all text from runs goes into the page through textContent, never as HTML, except the
// fragments the server renders (and escapes) itself.
"use strict";
(function () {
  var LINE = 18;
  // Set once the page starts to leave: a refresh that lands after that must not reload this
  // page, which would cancel the navigation the user asked for.
  var leaving = false;
  window.addEventListener("beforeunload", function () { leaving = true; });
  window.addEventListener("pagehide", function () { leaving = true; });
  var DISGUISING = /[\u200B-\u200F\u202A-\u202E\u2066-\u2069\uFEFF]/g;
  function visible(s) {
    return s.replace(DISGUISING, function (c) {
      return "<U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + ">";
    });
  }

  // Replaces the content of `target` with the server-rendered fragment at `url`.
  function refresh(target, url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        // A session that expired lands on the login page: go there rather than embed it.
        if (r.redirected && r.url.indexOf("/login") >= 0) { location.href = r.url; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null || leaving) return;
        target.innerHTML = html;
        localTimes(target);
        // A run page opened before its first step started: its log pane appears with it.
        if (target.id === "views" && !document.getElementById("logview") && target.querySelector("#graph .node")) {
          location.reload();
        }
      });
  }

  // Follows a `changed` event stream and refreshes a fragment on each change.
  function live(el, target) {
    var url = el.getAttribute("data-live");
    if (!url || !window.EventSource) return;
    var es = new EventSource(url);
    es.addEventListener("changed", function (e) {
      refresh(target, el.getAttribute("data-fragment"));
      if (e.data === "final") es.close();
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  function localTimes(root) {
    root.querySelectorAll("time.local").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = d.toLocaleString();
    });
  }

  // ANSI SGR colours into spans.
  function ansiLine(text) {
    var frag = document.createDocumentFragment();
    var re = /\x1b\[([0-9;?]*)([A-Za-z])/g;
    var state = { b: false, i: false, u: false, fg: null };
    var last = 0, m;
    function emit(s) {
      if (!s) return;
      s = visible(s);
      if (!state.b && !state.i && !state.u && state.fg === null) { frag.appendChild(document.createTextNode(s)); return; }
      var span = document.createElement("span");
      var cls = [];
      if (state.b) cls.push("a-b");
      if (state.i) cls.push("a-i");
      if (state.u) cls.push("a-u");
      if (state.fg !== null) cls.push("a-" + state.fg);
      span.className = cls.join(" ");
      span.textContent = s;
      frag.appendChild(span);
    }
    while ((m = re.exec(text)) !== null) {
      emit(text.slice(last, m.index));
      last = re.lastIndex;
      if (m[2] !== "m") continue;
      (m[1] === "" ? ["0"] : m[1].split(";")).forEach(function (c) {
        var n = parseInt(c, 10) || 0;
        if (n === 0) state = { b: false, i: false, u: false, fg: null };
        else if (n === 1) state.b = true;
        else if (n === 3) state.i = true;
        else if (n === 4) state.u = true;
        else if (n === 22) state.b = false;
        else if (n === 23) state.i = false;
        else if (n === 24) state.u = false;
        else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) state.fg = n;
        else if (n === 39) state.fg = null;
      });
    }
    emit(text.slice(last));
    return frag;
  }
  var PLAIN = /\x1b\[[0-9;?]*[A-Za-z]/g;
  var BAD = /error|fail|fatal|panic|exception|traceback/i;

  function logView(view) {
    var lines = [];
    var spacer = view.querySelector(".logspacer");
    var box = view.querySelector(".loglines");
    var count = document.getElementById("logcount");
    var search = document.getElementById("logsearch");
    var failed = view.getAttribute("data-failed") === "true";
    var target = null, hits = [], hit = -1, pending = false, follow = true, done = false;
    var m = /^#L(\d+)$/.exec(location.hash);
    if (m) { target = parseInt(m[1], 10); follow = false; }

    function schedule() {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () { pending = false; render(); });
    }
    function render() {
      spacer.style.height = (lines.length * LINE) + "px";
      view.setAttribute("data-lines", String(lines.length));
      if (count && !hits.length) count.textContent = lines.length + " lines" + (done ? "" : " …");
      if (follow) view.scrollTop = view.scrollHeight;
      var first = Math.max(0, Math.floor(view.scrollTop / LINE) - 30);
      var last = Math.min(lines.length, Math.ceil((view.scrollTop + view.clientHeight) / LINE) + 30);
      box.style.transform = "translateY(" + (first * LINE) + "px)";
      var frag = document.createDocumentFragment();
      for (var i = first; i < last; i++) {
        var div = document.createElement("div");
        div.className = "logline";
        div.id = "L" + (i + 1);
        if (i + 1 === target) div.className += " target";
        if (hits.length && hits[hit] === i) div.className += " hit";
        if (failed && BAD.test(lines[i])) div.className += " bad";
        var a = document.createElement("a");
        a.href = "#L" + (i + 1);
        a.textContent = String(i + 1);
        div.appendChild(a);
        div.appendChild(ansiLine(lines[i]));
        frag.appendChild(div);
      }
      box.replaceChildren(frag);
    }
    function scrollToLine(i) {
      follow = false;
      view.scrollTop = Math.max(0, i * LINE - view.clientHeight / 3);
      schedule();
    }
    function loaded() {
      done = true;
      if (target) scrollToLine(target - 1);
      else if (failed) {
        // The failing lines in view: the last line that reads like an error, else the end.
        var at = lines.length - 1;
        for (var i = lines.length - 1; i >= 0 && i >= lines.length - 2000; i--) {
          if (BAD.test(lines[i].replace(PLAIN, ""))) { at = i; break; }
        }
        scrollToLine(at);
      }
      schedule();
    }
    view.addEventListener("scroll", function () {
      follow = view.scrollTop + view.clientHeight >= view.scrollHeight - LINE * 2;
      schedule();
    });
    window.addEventListener("hashchange", function () {
      var m = /^#L(\d+)$/.exec(location.hash);
      if (m) { target = parseInt(m[1], 10); scrollToLine(target - 1); }
    });
    if (search) {
      search.addEventListener("keydown", function (e) {
        if (e.key !== "Enter") return;
        e.preventDefault();
        var q = search.value.toLowerCase();
        if (!q) { hits = []; schedule(); return; }
        if (search.getAttribute("data-q") !== q) {
          hits = [];
          for (var i = 0; i < lines.length; i++) if (lines[i].replace(PLAIN, "").toLowerCase().indexOf(q) >= 0) hits.push(i);
          search.setAttribute("data-q", q);
          hit = -1;
        }
        if (!hits.length) { count.textContent = "no match"; schedule(); return; }
        hit = (hit + (e.shiftKey ? hits.length - 1 : 1)) % hits.length;
        count.textContent = (hit + 1) + " / " + hits.length;
        scrollToLine(hits[hit]);
      });
    }
    var src = view.getAttribute("data-src");
    if (view.getAttribute("data-live") === "true" && window.EventSource) {
      var es = new EventSource(src + "?follow=true");
      es.addEventListener("log", function (e) { lines.push(e.data); schedule(); });
      es.addEventListener("end", function () { es.close(); loaded(); });
      es.addEventListener("error", function () { if (es.readyState === 2) loaded(); });
      window.addEventListener("pagehide", function () { es.close(); });
    } else {
      fetch(src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : ""; })
        .then(function (text) {
          lines = text.split("\n");
          if (lines.length && lines[lines.length - 1] === "") lines.pop();
          follow = false;
          loaded();
        });
    }
  }

  // Client-side checks of the trigger form (the server checks again).
  function checkForm(form) {
    var ok = true;
    form.querySelectorAll("[data-type]").forEach(function (input) {
      var type = input.getAttribute("data-type"), v = input.value.trim(), msg = "";
      if (v !== "") {
        if (type === "integer" && !/^-?\d+$/.test(v)) msg = "must be an integer, not `" + v + "`";
        else if (type === "number" && isNaN(Number(v))) msg = "must be a number, not `" + v + "`";
        else if (type === "array" || type === "object") {
          try {
            var parsed = JSON.parse(v);
            if (type === "array" && !Array.isArray(parsed)) msg = "must be a JSON array";
            if (type === "object" && (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))) msg = "must be a JSON object";
          } catch (err) { msg = "not valid JSON: " + err.message; }
        }
      }
      var field = input.closest(".field");
      var out = field && field.querySelector(".field-error");
      if (out) out.textContent = msg;
      if (field) field.classList.toggle("invalid", msg !== "");
      if (msg) { if (ok) input.focus(); ok = false; }
    });
    return ok;
  }

  function keyboard() {
    var rows = function () { return Array.prototype.slice.call(document.querySelectorAll("#rows tr[data-run]")); };
    var at = -1;
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
        if (e.key === "Escape") t.blur();
        return;
      }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") {
        var s = document.getElementById("search") || document.getElementById("logsearch");
        if (s) { e.preventDefault(); s.focus(); }
      } else if (e.key === "j" || e.key === "k") {
        var list = rows();
        if (!list.length) return;
        list.forEach(function (r) { r.classList.remove("kbd"); });
        at = Math.max(0, Math.min(list.length - 1, at + (e.key === "j" ? 1 : -1)));
        list[at].classList.add("kbd");
        var a = list[at].querySelector("a.runlink");
        if (a) a.focus();
      } else if (e.key === "g") {
        var log = document.getElementById("logview");
        if (log) log.focus();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var runs = document.getElementById("runs");
    if (runs) live(runs, document.getElementById("rows"));
    var views = document.getElementById("views");
    if (views) live(views, views);
    var log = document.getElementById("logview");
    if (log) logView(log);
    document.querySelectorAll("form.trigger").forEach(function (f) {
      f.addEventListener("submit", function (e) { if (!checkForm(f)) e.preventDefault(); });
    });
    keyboard();
  });
})();
