// The machine page's BMC buttons: each queues a job (a POST carrying the
// session's CSRF token) and follows it (/ui/job/ID/events) to its end.
"use strict";

(function () {
  const form = document.getElementById("bmc-actions");
  const failure = document.getElementById("bmc-error");
  const job = document.getElementById("job");
  let watching = null;
  function fail(text) {
    failure.textContent = text;
    failure.hidden = false;
  }
  function show(j) {
    job.hidden = false;
    job.dataset.state = j.state;
    document.getElementById("job-id").textContent = j.id;
    job.dataset.what = j.kind.toLowerCase() + (j.action ? " " + j.action : "");
    document.getElementById("job-what").textContent = job.dataset.what;
    const st = document.getElementById("job-state");
    st.className = "badge job-" + j.state;
    st.textContent = j.state;
    document.getElementById("job-message").textContent = j.message || j.answer || "";
  }
  function follow(id) {
    if (watching) watching.close();
    const es = new EventSource("/ui/job/" + encodeURIComponent(id) + "/events");
    watching = es;
    es.addEventListener("job", (e) => show(JSON.parse(e.data)));
    es.addEventListener("end", () => es.close());
    es.addEventListener("fail", function (e) {
      es.close();
      fail("following the job failed: " + JSON.parse(e.data).message);
    });
  }
  form.addEventListener("click", function (e) {
    const action = e.target.dataset && e.target.dataset.action;
    if (!action) return;
    failure.hidden = true;
    const body = new URLSearchParams({ action: action });
    fetch("/ui/machine/" + encodeURIComponent(form.dataset.machine) + "/bmc", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": form.dataset.csrf },
      body: body,
    })
      .then((res) => (res.ok ? res.json() : res.text().then((t) => Promise.reject(new Error(t.trim())))))
      .then(function (j) {
        show(j);
        follow(j.id);
      })
      .catch((err) => fail(err.message));
  });
})();
