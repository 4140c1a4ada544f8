// redkit dashboard: live fragments over one SSE stream, actions as POSTs with a CSRF header.
// No build step, no framework: server-rendered HTML, this file adds push and actions.
"use strict";
(() => {
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : "";
  };
  const base = meta("rk-base");
  const csrf = meta("rk-csrf");
  const statusEl = document.getElementById("live-status");
  const toastEl = document.getElementById("toast");
  let toastTimer = 0;

  const setStatus = (text, ok) => {
    if (!statusEl) return;
    statusEl.textContent = text;
    statusEl.classList.toggle("ok", Boolean(ok));
  };

  const toast = (text, bad) => {
    if (!toastEl) return;
    toastEl.textContent = text;
    toastEl.classList.toggle("bad", Boolean(bad));
    toastEl.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastEl.hidden = true; }, 5000);
  };

  // Times arrive in UTC; show them in the browser's zone (the UTC value stays as a tooltip).
  const localize = (root) => {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (!Number.isNaN(d.getTime())) {
        t.title = t.getAttribute("datetime");
        t.textContent = d.toLocaleString();
      }
    });
  };
  localize(document);

  // A fragment replaces its container; keyboard focus is put back on the same control.
  const replace = (el, html) => {
    const active = document.activeElement;
    let key = null;
    if (active && el.contains(active) && active.dataset && active.dataset.action) {
      key = [active.dataset.action, active.dataset.queue || "", active.dataset.job || "", active.dataset.name || ""];
    }
    el.innerHTML = html;
    localize(el);
    if (key) {
      const again = Array.from(el.querySelectorAll("[data-action]")).find((b) =>
        b.dataset.action === key[0] && (b.dataset.queue || "") === key[1] &&
        (b.dataset.job || "") === key[2] && (b.dataset.name || "") === key[3]);
      if (again) again.focus();
    }
  };

  let query = [];
  try { query = JSON.parse(meta("rk-stream") || "[]"); } catch (e) { query = []; }
  if (query.length) {
    const source = new EventSource(`${base}/stream?${new URLSearchParams(query)}`);
    source.addEventListener("open", () => setStatus("live", true));
    source.addEventListener("error", () => setStatus("reconnecting…", false));
    source.addEventListener("fragment", (event) => {
      const msg = JSON.parse(event.data);
      document.querySelectorAll(`[data-live="${CSS.escape(msg.view)}"]`).forEach((el) => replace(el, msg.html));
      setStatus("live", true);
    });
  } else {
    setStatus("", true);
  }

  const post = async (action, body) => {
    let response;
    try {
      response = await fetch(`${base}/actions/${encodeURIComponent(action)}`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify(body),
      });
    } catch (e) {
      toast("The dashboard did not answer; try again.", true);
      return;
    }
    let reply = {};
    try { reply = await response.json(); } catch (e) { reply = {}; }
    if (response.ok) toast(reply.message || "Done.", false);
    else toast(reply.error || `Refused (${response.status}).`, true);
    return response.ok;
  };

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const confirmText = button.dataset.confirm;
    if (confirmText && !window.confirm(confirmText)) return;
    const body = {};
    for (const name of ["queue", "job", "name", "channel", "cache", "tag", "limiter", "key", "user", "session"]) {
      if (button.dataset[name] !== undefined) body[name] = button.dataset[name];
    }
    button.disabled = true;
    // data-reload: the page is not live (a search result): show the new state once done.
    post(button.dataset.action, body).then((ok) => {
      if (ok && button.dataset.reload !== undefined) setTimeout(() => location.reload(), 600);
    }).finally(() => { button.disabled = false; });
  });

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    const body = Object.fromEntries(new FormData(form).entries());
    post(form.dataset.action, body);
  });

  // The notification feed: its own stream, filtered by channel or pattern on the server.
  const feed = document.getElementById("feed");
  if (feed) {
    const empty = document.getElementById("feed-empty");
    const filterForm = document.getElementById("feed-filter");
    let source = null;
    const open = (filter) => {
      if (source) source.close();
      delete feed.dataset.ready;
      source = new EventSource(`${base}/feed?${new URLSearchParams({ filter })}`);
      source.addEventListener("open", () => setStatus("live", true));
      source.addEventListener("error", () => setStatus("reconnecting…", false));
      source.addEventListener("ready", () => { feed.dataset.ready = filter; });
      source.addEventListener("notification", (event) => {
        const e = JSON.parse(event.data);
        const li = document.createElement("li");
        const when = document.createElement("time");
        when.setAttribute("datetime", new Date(e.time * 1000).toISOString());
        const channel = document.createElement("strong");
        channel.className = "channel";
        channel.textContent = e.channel;
        const data = document.createElement("pre");
        data.className = "json";
        data.textContent = JSON.stringify(e.data, null, 2);
        li.append(when, " ", channel, data);
        localize(li);
        feed.prepend(li);
        while (feed.children.length > 200) feed.lastElementChild.remove();
        if (empty) empty.hidden = true;
      });
    };
    open(new FormData(filterForm).get("filter") || "*");
    filterForm.addEventListener("submit", (event) => {
      event.preventDefault();
      feed.replaceChildren();
      if (empty) empty.hidden = false;
      open(new FormData(filterForm).get("filter") || "*");
    });
  }
})();
