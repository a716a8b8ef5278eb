// The template editor: line numbers beside the text, kept in step as the
// operator types and scrolls; the lines the server named stay marked, and
// a problem's "line N" link puts the cursor on that line.
"use strict";

(function () {
  const text = document.getElementById("template-text");
  const gutter = document.getElementById("gutter");
  const live = document.getElementById("live");
  live.dataset.state = "ended";
  live.textContent = "editor";
  // The marks as the server sent them, by line number.
  const marks = new Map();
  for (const li of gutter.querySelectorAll("li.bad")) {
    marks.set(Number(li.dataset.line), li.title);
  }
  function lines() {
    let n = 1;
    for (let i = text.value.indexOf("\n"); i !== -1; i = text.value.indexOf("\n", i + 1)) {
      n++;
    }
    return n;
  }
  function renumber() {
    const n = lines();
    if (n === gutter.children.length) {
      return;
    }
    const out = [];
    for (let i = 1; i <= n; i++) {
      const li = document.createElement("li");
      li.id = "line-" + i;
      li.dataset.line = String(i);
      li.textContent = String(i);
      if (marks.has(i)) {
        li.className = "bad";
        li.title = marks.get(i);
      }
      out.push(li);
    }
    gutter.replaceChildren(...out);
    gutter.scrollTop = text.scrollTop;
  }
  text.addEventListener("input", renumber);
  text.addEventListener("scroll", function () {
    gutter.scrollTop = text.scrollTop;
  });
  for (const a of document.querySelectorAll("#problems a.goto")) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      const want = Number(a.closest("li").dataset.line);
      let start = 0;
      for (let i = 1; i < want && start !== -1; i++) {
        start = text.value.indexOf("\n", start) + 1 || -1;
      }
      if (start === -1) {
        return;
      }
      let end = text.value.indexOf("\n", start);
      if (end === -1) {
        end = text.value.length;
      }
      text.focus();
      text.setSelectionRange(start, end);
      const row = gutter.children[want - 1];
      if (row) {
        text.scrollTop = row.offsetTop - text.clientHeight / 3;
      }
    });
  }
})();
