// The machine page's timeline: the current workflow's events, those so
// far and each new one (/ui/workflow/ID/events), until it ends.
"use strict";

(function () {
  const live = document.getElementById("live");
  const table = document.getElementById("timeline");
  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }
  if (!table) {
    setLive("ended", "no workflow");
    return;
  }
  const body = table.querySelector("tbody");
  const es = new EventSource("/ui/workflow/" + encodeURIComponent(table.dataset.workflow) + "/events");
  es.addEventListener("open", function () {
    body.replaceChildren(); // each connection replays every event
    setLive("live", "live");
  });
  es.addEventListener("ev", function (e) {
    const ev = JSON.parse(e.data);
    const tr = document.createElement("tr");
    tr.dataset.state = ev.state;
    tr.dataset.action = ev.task + "/" + ev.action;
    for (const [cls, text] of [
      ["time", ev.time.replace("T", " ").replace("Z", "")],
      ["task", ev.task],
      ["action", ev.action],
      ["state", ""],
      ["seconds", ev.state === "RUNNING" ? "" : ev.seconds + " s"],
      ["message", ev.message || ""],
    ]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      if (cls === "state") {
        const badge = document.createElement("span");
        badge.className = "badge state-" + ev.state;
        badge.textContent = ev.state.toLowerCase();
        td.appendChild(badge);
      }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  });
  function end(state, text) {
    es.close();
    setLive(state, text);
  }
  es.addEventListener("end", function (e) {
    const state = JSON.parse(e.data).state;
    const badge = document.querySelector("#workflows tr.current .badge");
    if (state && badge) {
      badge.className = "badge state-" + state;
      badge.textContent = state;
    }
    end("ended", "workflow ended");
  });
  es.addEventListener("fail", (e) => end("reconnecting", JSON.parse(e.data).message));
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED) {
      window.location.assign("/ui/login");
      return;
    }
    setLive("reconnecting", "reconnecting…");
  });
})();
