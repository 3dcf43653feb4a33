// The web terminal of a dev environment: xterm.js on a websocket to the environment's shell,
// through the server's proxy (/x/<id>/terminal/ws), which lets it through on the session
// cookie: the page holds no secret. Frames are JSON: ["stdin", text] and ["resize", rows,
// cols] out, ["stdout", text] in. While the environment is still starting the proxy refuses
// the connection (before accepting it, so the browser learns no reason): try again for a
// while, then offer to reconnect. A session that ends (the shell exited) offers the same.
"use strict";

(function () {
  const RETRY_MS = 1500;
  const RETRIES = 80; // two minutes of starting

  function start() {
    const element = document.getElementById("terminal");
    if (!element || !window.Terminal || !window.FitAddon) return;
    const status = document.getElementById("term-status");
    const again = document.getElementById("term-reconnect");
    const say = (key) => { status.textContent = status.dataset[key] || ""; status.dataset.state = key; };

    const term = new window.Terminal({
      cursorBlink: true,
      fontSize: 14,
      fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "Noto Sans Mono CJK SC", monospace',
      lineHeight: 1.2,
      scrollback: 10000,
      theme: { background: "#0b1020", foreground: "#d1e7ff" },
    });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(element);
    fit.fit();
    term.focus();

    let socket = null;
    let tries = 0;
    const send = (frame) => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
    };

    function connect() {
      again.hidden = true;
      say(tries ? "waiting" : "connecting");
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const url = `${scheme}//${location.host}${element.dataset.ws}?rows=${term.rows}&cols=${term.cols}`;
      const ws = new WebSocket(url);
      let opened = false;
      socket = ws;
      ws.onopen = () => { opened = true; tries = 0; say("connected"); term.focus(); };
      ws.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch (error) { return; }
        if (Array.isArray(frame) && frame[0] === "stdout") term.write(frame[1]);
      };
      ws.onclose = () => {
        if (socket !== ws) return;
        socket = null;
        if (!opened && tries < RETRIES) {
          tries += 1;
          say("waiting");
          setTimeout(connect, RETRY_MS);
          return;
        }
        say(opened ? "ended" : "refused");
        tries = 0;
        again.hidden = false;
      };
    }

    term.onData((data) => send(["stdin", data]));
    term.onResize(({ rows, cols }) => send(["resize", rows, cols]));
    let pending = null;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(() => fit.fit(), 80);
    });
    again.addEventListener("click", connect);
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
