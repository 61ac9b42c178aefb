// The node's dashboard: a volunteer's view (availability, projects, runs now with their live log, history, the node)
// and a project's view (its jobs, their attempts, verdicts, logs, explain, cancel). Live from the node's event stream
// (/v1/events); details of what is on screen are asked for every refreshMs. preact and htm, served by the node.
import htm from "/assets/vendor/htm.mjs";
import { Component, h, render } from "/assets/vendor/preact.mjs";

const html = htm.bind(h);
/** How often the logs and the job on screen are asked for again. */
const refreshMs = 1000;
const availabilities = ["eager", "reluctant", "paused", "offline"];
const availabilityHelp = {
  eager: "take jobs at once",
  reluctant: "take jobs only when nobody eager did",
  paused: "finish what runs, take nothing new",
  offline: "leave the mesh",
};

async function api(method, path, body) {
  const answer = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const value = await answer.json().catch(() => null);
  if (!answer.ok) throw new Error(value?.error?.message ?? `${method} ${path}: ${answer.status}`);
  return value;
}

const when = (ms) => (ms === null || ms === undefined ? "–" : new Date(ms).toLocaleString());
function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const seconds = Math.round(ms / 1000);
  return seconds < 60 ? `${seconds}s` : `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
}
const short = (text, n = 12) =>
  text === null || text === undefined ? "–" : text.length > n ? `${text.slice(0, n)}…` : text;

const dayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
/** Minutes in a day: a window's start and end are below it. */
const minutesPerDay = 24 * 60;
const clock = (minute) => `${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
/** "HH:MM" from a time input as minutes after midnight, or null. */
function minuteOf(text) {
  const match = /^(\d{2}):(\d{2})$/.exec(text);
  if (match === null) return null;
  const minute = Number(match[1]) * 60 + Number(match[2]);
  return minute < minutesPerDay ? minute : null;
}
/** How the node is reached, in words (the status's reachability: AutoNAT, relays, hole punches). */
function reachabilityText(reach) {
  if (reach === null || reach === undefined) return "on loopback only: no NAT services";
  const parts = [];
  if (reach.kind === "public") parts.push(`public: ${reach.confirmed.join(", ")} dialled back by peers`);
  else if (reach.kind === "relayed")
    parts.push(`behind NAT, through relay ${reach.relays.map((p) => short(p, 16)).join(", ")}`);
  else parts.push("not known yet: no address confirmed, no relay reservation");
  if (reach.holePunched.length > 0)
    parts.push(`direct after a hole punch with ${reach.holePunched.map((p) => short(p, 16)).join(", ")}`);
  if (reach.relayService !== null)
    parts.push(
      `relays for others: ${reach.relayService.reservations} reservation(s), ${bytes(reach.relayService.limits.dataBytes)} and ${Math.round(reach.relayService.limits.durationMs / 1000)} s per relayed connection`,
    );
  return parts.join("; ");
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
const windowText = (w) =>
  `${w.days.length === 0 ? "every day" : w.days.map((d) => dayNames[d]).join(",")} ${clock(w.startMinute)}–${clock(w.endMinute)}`;

/** Log lines as one text per attempt and stream, in order. */
function logText(lines) {
  const parts = new Map();
  for (const line of [...lines].sort((a, b) => a.attempt - b.attempt || a.offset - b.offset)) {
    const key = `attempt ${line.attempt} ${line.stream}`;
    parts.set(key, (parts.get(key) ?? "") + line.text);
  }
  return [...parts].map(([key, text]) => `── ${key} ──\n${text}`).join("\n");
}

function viewOfHash() {
  return location.hash === "#project" ? "project" : location.hash === "#volunteer" ? "volunteer" : null;
}

class App extends Component {
  state = {
    snapshot: null,
    connected: false,
    error: "",
    view: viewOfHash(),
    liveLogs: {},
    shownRun: null,
    shownRunLog: "",
    job: null,
    jobId: null,
    jobLog: "",
    explain: "",
    /** The rules being edited (windows with "HH:MM" times, the ceiling as typed), or null when the form is closed. */
    rulesDraft: null,
    rulesNote: "",
    /** The project whose removal waits for a second click, or null. */
    confirmRemove: null,
  };

  componentDidMount() {
    this.events = new EventSource("/v1/events");
    this.events.addEventListener("snapshot", (event) => {
      this.setState({ snapshot: JSON.parse(event.data), connected: true });
    });
    this.events.addEventListener("error", () => this.setState({ connected: false }));
    this.onHash = () => this.setState({ view: viewOfHash() });
    window.addEventListener("hashchange", this.onHash);
    this.timer = setInterval(() => void this.refresh(), refreshMs);
  }

  componentWillUnmount() {
    this.events.close();
    clearInterval(this.timer);
    window.removeEventListener("hashchange", this.onHash);
  }

  view() {
    const status = this.state.snapshot?.status;
    if (this.state.view !== null) return this.state.view;
    return status !== undefined && !status.roles.worker && status.roles.master.length > 0 ? "project" : "volunteer";
  }

  async refresh() {
    const snapshot = this.state.snapshot;
    if (snapshot === null) return;
    try {
      if (this.view() === "volunteer") {
        const running = [...new Set(snapshot.runs.filter((run) => run.state === "running").map((run) => run.jobId))];
        const liveLogs = {};
        for (const jobId of running)
          liveLogs[jobId] = logText(await api("GET", `/v1/runs/${encodeURIComponent(jobId)}/logs`));
        this.setState({ liveLogs });
      } else if (this.state.jobId !== null) {
        await this.loadJob(this.state.jobId);
      }
    } catch (error) {
      this.setState({ error: error.message });
    }
  }

  async loadJob(jobId) {
    const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
    const [job, logs, explained] = await Promise.all([
      api("GET", path),
      api("GET", `${path}/logs`),
      api("GET", `${path}/explain`),
    ]);
    if (this.state.jobId === jobId) this.setState({ job, jobLog: logText(logs), explain: explained.explanation });
  }

  act(promise) {
    promise.then(
      () => this.setState({ error: "" }),
      (error) => this.setState({ error: error.message }),
    );
  }

  setAvailability(availability) {
    this.act(
      api("POST", "/v1/availability", { availability }).then((status) =>
        this.setState({ snapshot: { ...this.state.snapshot, status } }),
      ),
    );
  }

  editRules(rules) {
    const current = rules ?? { windows: [], maxLoadAverage: null };
    this.setState({
      rulesNote: "",
      rulesDraft: {
        windows: current.windows.map((w) => ({
          days: [...w.days],
          start: clock(w.startMinute),
          end: clock(w.endMinute),
        })),
        ceiling: current.maxLoadAverage === null ? "" : String(current.maxLoadAverage),
      },
    });
  }

  changeDraft(change) {
    this.setState({ rulesDraft: change(this.state.rulesDraft) });
  }

  saveRules(event) {
    event.preventDefault();
    const draft = this.state.rulesDraft;
    const windows = [];
    for (const [index, w] of draft.windows.entries()) {
      const startMinute = minuteOf(w.start);
      const endMinute = minuteOf(w.end);
      if (startMinute === null || endMinute === null) {
        this.setState({ error: `window ${index + 1}: expected a start and an end time` });
        return;
      }
      windows.push({ days: [...w.days].sort((a, b) => a - b), startMinute, endMinute });
    }
    const ceiling = draft.ceiling.trim();
    const maxLoadAverage = ceiling === "" ? null : Number(ceiling);
    this.act(
      api("POST", "/v1/rules", { windows, maxLoadAverage }).then((status) =>
        this.setState({
          snapshot: { ...this.state.snapshot, status },
          rulesDraft: null,
          rulesNote: "Saved to config.yaml; in force now.",
        }),
      ),
    );
  }

  removeProject(project) {
    this.act(
      api("DELETE", `/v1/trust/${encodeURIComponent(project)}`).then((status) =>
        this.setState({ snapshot: { ...this.state.snapshot, status }, confirmRemove: null }),
      ),
    );
  }

  showRun(run) {
    this.setState({ shownRun: run, shownRunLog: "" });
    this.act(
      api("GET", `/v1/runs/${encodeURIComponent(run.jobId)}/logs`).then((lines) =>
        this.setState({ shownRunLog: logText(lines.filter((line) => line.attempt === run.attempt)) }),
      ),
    );
  }

  showJob(jobId) {
    this.setState({ jobId, job: null, jobLog: "", explain: "" });
    this.act(this.loadJob(jobId));
  }

  cancel(jobId) {
    this.act(api("POST", `/v1/jobs/${encodeURIComponent(jobId)}/cancel`, {}).then(() => this.loadJob(jobId)));
  }

  render() {
    const { snapshot, connected, error } = this.state;
    const view = this.view();
    const header = html`<header>
      <h1>cimesh node</h1>
      <nav aria-label="Views">
        <a href="#volunteer" aria-current=${view === "volunteer" ? "page" : undefined}>Volunteer</a>
        <a href="#project" aria-current=${view === "project" ? "page" : undefined}>Project</a>
      </nav>
      <span role="status" id="connection">${connected ? "live" : "connecting…"}</span>
    </header>`;
    if (snapshot === null) return html`${header}<main><p>Waiting for the node…</p></main>`;
    return html`${header}
      <main>
        ${error === "" ? null : html`<p class="error" role="alert">${error}</p>`}
        ${view === "volunteer" ? this.volunteer(snapshot) : this.project(snapshot)}
      </main>`;
  }

  volunteer({ status, runs, version }) {
    const worker = status.roles.worker;
    const running = runs.filter((run) => run.state === "running");
    const ended = runs.filter((run) => run.state === "ended").reverse();
    const chosen = status.availabilityChosen ?? status.availability;
    const rules = status.availabilityRules;
    const spentMs = {};
    let totalMs = 0;
    for (const run of ended) {
      spentMs[run.project] = (spentMs[run.project] ?? 0) + (run.durationMs ?? 0);
      totalMs += run.durationMs ?? 0;
    }
    return html`
      <section aria-labelledby="availability-heading">
        <h2 id="availability-heading">Availability</h2>
        ${
          worker
            ? html`<div class="choices" role="group" aria-label="Availability">
                ${availabilities.map(
                  (a) =>
                    html`<button type="button" aria-pressed=${chosen === a ? "true" : "false"} title=${availabilityHelp[a]}
                      onClick=${() => this.setAvailability(a)}>${a}</button>`,
                )}
              </div>
              <p id="availability-now">Chosen: <strong>${chosen}</strong>${
                status.availability !== chosen
                  ? html`; in force now: <strong>${status.availability}</strong> (by a rule or for want of a sandbox)`
                  : null
              }. Kept in config.yaml across restarts.</p>
              ${this.rulesSection(rules)}
              <p>Slots: ${status.running} of ${status.slots} busy.</p>`
            : html`<p>This node runs no worker (start it with <code>--worker</code>).</p>`
        }
      </section>
      <section aria-labelledby="projects-heading">
        <h2 id="projects-heading">Projects trusted</h2>
        ${
          status.trusted.length === 0
            ? html`<p>None: add one with <code>cimesh trust add</code>.</p>`
            : html`<div class="table"><table>
                <thead><tr><th scope="col">Project</th><th scope="col">Share</th><th scope="col">Measured slice (run time)</th><th scope="col">Keyset</th><th scope="col">Trust</th></tr></thead>
                <tbody>${status.trusted.map(
                  (p) => html`<tr><td class="mono">${p.project}</td><td>${p.share}</td>
                    <td>${totalMs === 0 ? "–" : `${Math.round((100 * (spentMs[p.project] ?? 0)) / totalMs)}%`}</td><td>${p.keysetVersion ?? "none yet"}</td>
                    <td>${this.trustCell(p.project, status.trustRemoved ?? [])}</td></tr>`,
                )}</tbody></table></div>`
        }
      </section>
      <section aria-labelledby="running-heading" id="runs-now">
        <h2 id="running-heading">Running now</h2>
        ${
          running.length === 0
            ? html`<p>Nothing runs now.</p>`
            : running.map(
                (run) => html`<article class="run-now">
                  <h3>${run.jobId} “${run.name}”, shard ${run.shard} of ${run.shards}, attempt ${run.attempt}</h3>
                  <p>Since ${when(run.startedAtMs)} · project <span class="mono">${short(run.project)}</span> · master <span class="mono">${short(run.master, 16)}</span></p>
                  ${this.usageLine(status.busySlots.find((slot) => slot.jobId === run.jobId && slot.attempt === run.attempt))}
                  <pre aria-label=${`Live log of ${run.jobId}`} class="live-log">${this.state.liveLogs[run.jobId] ?? ""}</pre>
                </article>`,
              )
        }
      </section>
      <section aria-labelledby="history-heading">
        <h2 id="history-heading">History</h2>
        ${
          ended.length === 0
            ? html`<p>No runs yet.</p>`
            : html`<div class="table"><table id="history">
                <thead><tr><th scope="col">Job</th><th scope="col">Shard</th><th scope="col">Outcome</th><th scope="col">Duration</th><th scope="col">Ended</th><th scope="col">Project</th><th scope="col">Log</th></tr></thead>
                <tbody>${ended.map(
                  (run) => html`<tr>
                    <td>${run.jobId} <span class="note">${run.name}</span></td>
                    <td>${run.shard} of ${run.shards}, attempt ${run.attempt}</td>
                    <td class=${`outcome-${run.outcome}`}>${run.outcome}${run.exitCode === null ? "" : `, exit ${run.exitCode}`}</td>
                    <td>${duration(run.durationMs)}</td>
                    <td>${when(run.endedAtMs)}</td>
                    <td class="mono">${short(run.project)}</td>
                    <td><button type="button" onClick=${() => this.showRun(run)}>log</button></td>
                  </tr>`,
                )}</tbody></table></div>`
        }
        ${
          this.state.shownRun === null
            ? null
            : html`<h3>Log of ${this.state.shownRun.jobId}, attempt ${this.state.shownRun.attempt}</h3>
                <p>Result <span class="mono">${this.state.shownRun.resultDigest ?? "–"}</span>; outputs <span class="mono">${this.state.shownRun.outputsDigest ?? "–"}</span></p>
                <pre>${this.state.shownRunLog}</pre>`
        }
      </section>
      ${this.nodeSection(status, version)}`;
  }

  nodeSection(status, version) {
    return html`<section aria-labelledby="node-heading">
      <h2 id="node-heading">This node</h2>
      <dl>
        <dt>PeerId</dt><dd class="mono" id="peer-id">${status.peerId}</dd>
        <dt>Addresses</dt><dd class="mono">${status.addresses.join(" ")}</dd>
        <dt>Roles</dt><dd>${status.roles.worker ? "worker" : "no worker"}; master of ${status.roles.master.length === 0 ? "none" : status.roles.master.map((p) => short(p)).join(", ")}</dd>
        <dt>Peers</dt><dd>${status.peers}</dd>
        <dt>Reachable</dt><dd id="reachability">${reachabilityText(status.reachability)}</dd>
        <dt>Peer scores</dt><dd class="mono">${
          Object.entries(status.peerScores)
            .map(([peer, score]) => `${short(peer, 16)} ${score.toFixed(1)}`)
            .join("; ") || "–"
        }</dd>
        <dt>Cache</dt><dd id="cache-use">${
          status.cache === undefined
            ? "–"
            : `${bytes(status.cache.usedBytes)} used of ${status.cache.quotaBytes === null ? "no quota" : `${bytes(status.cache.quotaBytes)} quota (${Math.round((100 * status.cache.usedBytes) / Math.max(1, status.cache.quotaBytes))}%)`}`
        }</dd>
        <dt>Running jobs</dt><dd id="jobs-use">${
          status.busySlots.length === 0
            ? "none"
            : html`<ul>${status.busySlots.map(
                (slot) => html`<li>${slot.jobId} shard ${slot.shard}: ${this.usageText(slot)}</li>`,
              )}</ul>`
        }</dd>
        <dt>Version</dt><dd>cimesh ${version}</dd>
      </dl>
    </section>`;
  }

  usageText(slot) {
    const usage = slot?.usage;
    if (usage === undefined) return "CPU and memory not known yet";
    const share = usage.cpuPercent === null ? "…" : `${Math.round(usage.cpuPercent)}%`;
    return `CPU ${share} of a core (${(usage.cpuMs / 1000).toFixed(1)} s in all), memory ${bytes(usage.memoryBytes)}, ${usage.processes} process(es)`;
  }

  usageLine(slot) {
    return html`<p class="usage">${this.usageText(slot)}</p>`;
  }

  trustCell(project, removed) {
    if (removed.includes(project))
      return html`<span class="note">removed from config.yaml: takes effect at the next start</span>`;
    if (this.state.confirmRemove !== project)
      return html`<button type="button" aria-label=${`Remove ${project}`} onClick=${() => this.setState({ confirmRemove: project })}>remove</button>`;
    return html`<span role="group" aria-label="Confirm removal">Stop trusting it (at the next start)?
      <button type="button" class="danger" onClick=${() => this.removeProject(project)}>Yes, remove</button>
      <button type="button" onClick=${() => this.setState({ confirmRemove: null })}>Keep it</button></span>`;
  }

  rulesSection(rules) {
    const draft = this.state.rulesDraft;
    const shown = html`<p id="rules-now">Time windows: ${
      rules === undefined || rules === null || rules.windows.length === 0
        ? "none (any time)"
        : rules.windows.map(windowText).join("; ")
    }. Load ceiling: ${rules?.maxLoadAverage ?? "none"}.${this.state.rulesNote === "" ? "" : ` ${this.state.rulesNote}`}</p>`;
    if (draft === null)
      return html`${shown}<p><button type="button" aria-expanded="false" aria-controls="rules-form" onClick=${() => this.editRules(rules)}>Edit time windows and load ceiling</button></p>`;
    const update = (index, change) =>
      this.changeDraft((d) => ({ ...d, windows: d.windows.map((w, i) => (i === index ? change(w) : w)) }));
    return html`${shown}
      <form id="rules-form" class="rules" onSubmit=${(event) => this.saveRules(event)}>
        <p class="note">The worker takes jobs only inside one of the windows (none: at any time; an end before the start runs past midnight; no day ticked: every day) and while the load average is at or under the ceiling.</p>
        ${draft.windows.map(
          (w, index) => html`<fieldset class="window">
            <legend>Window ${index + 1}</legend>
            <span class="days">${dayNames.map(
              (name, day) => html`<label><input type="checkbox" checked=${w.days.includes(day)}
                onChange=${(event) => update(index, (x) => ({ ...x, days: event.currentTarget.checked ? [...x.days, day] : x.days.filter((d) => d !== day) }))} />${name}</label>`,
            )}</span>
            <label>From <input type="time" required value=${w.start} onInput=${(event) => update(index, (x) => ({ ...x, start: event.currentTarget.value }))} /></label>
            <label>Until <input type="time" required value=${w.end} onInput=${(event) => update(index, (x) => ({ ...x, end: event.currentTarget.value }))} /></label>
            <button type="button" onClick=${() => this.changeDraft((d) => ({ ...d, windows: d.windows.filter((_, i) => i !== index) }))}>Remove window ${index + 1}</button>
          </fieldset>`,
        )}
        <p><button type="button" onClick=${() => this.changeDraft((d) => ({ ...d, windows: [...d.windows, { days: [], start: "09:00", end: "17:00" }] }))}>Add a window</button></p>
        <p><label>Load ceiling (1-minute load average; empty for none) <input id="load-ceiling" type="number" min="0" step="0.1" inputmode="decimal" value=${draft.ceiling}
          onInput=${(event) => this.changeDraft((d) => ({ ...d, ceiling: event.currentTarget.value }))} /></label></p>
        <p><button type="submit">Save rules</button> <button type="button" onClick=${() => this.setState({ rulesDraft: null })}>Cancel</button></p>
      </form>`;
  }

  project({ status, jobs, reports = [] }) {
    const { job, jobId } = this.state;
    return html`
      <section aria-labelledby="jobs-heading">
        <h2 id="jobs-heading">Jobs</h2>
        ${
          status.roles.master.length === 0
            ? html`<p>This node is master of no project (start it with <code>--master</code>).</p>`
            : jobs.length === 0
              ? html`<p>No jobs yet: submit one with <code>cimesh submit</code>.</p>`
              : html`<div class="table"><table id="jobs">
                  <thead><tr><th scope="col">Job</th><th scope="col">Name</th><th scope="col">State</th><th scope="col">Runs</th><th scope="col">Submitted</th><th scope="col"></th></tr></thead>
                  <tbody>${[...jobs].reverse().map(
                    (j) => html`<tr>
                      <td>${j.jobId}</td><td>${j.name}</td>
                      <td class=${`status-${j.status}`}>${j.status}${j.reason === "" ? "" : `: ${j.reason}`}</td>
                      <td>${j.runsAwarded} awarded, ${j.runsLive} running</td>
                      <td>${when(j.submittedAtMs)}</td>
                      <td><button type="button" aria-label=${`Show ${j.jobId}`} onClick=${() => this.showJob(j.jobId)}>show</button></td>
                    </tr>`,
                  )}</tbody></table></div>`
        }
      </section>
      ${this.reportsSection(reports)}
      ${jobId === null ? null : this.jobSection(jobId, job)}
      ${this.nodeSection(status, this.state.snapshot.version)}`;
  }

  /** Builds volunteers made on their own and reported (push-only): a kind of their own, never a scheduled job. */
  reportsSection(reports) {
    if (reports.length === 0) return null;
    return html`<section aria-labelledby="reports-heading">
      <h2 id="reports-heading">Reported builds</h2>
      <p>Builds volunteers made on their own schedule and reported (<code>cimesh report</code>); the master scheduled none of them. <code>cimesh logs</code> and <code>cimesh result</code> take their ids.</p>
      <div class="table"><table id="reports">
        <thead><tr><th scope="col">Report</th><th scope="col">Job</th><th scope="col">Outcome</th><th scope="col">Source</th><th scope="col">Reporter</th><th scope="col">Received</th></tr></thead>
        <tbody>${[...reports].reverse().map(
          (r) => html`<tr>
            <td>${r.reportId}</td><td>${r.jobName}</td>
            <td class=${`outcome-${r.outcome}`}>${r.outcome}${r.exitCode === null ? "" : `, exit ${r.exitCode}`}</td>
            <td class="mono">${r.source === "" ? "–" : r.source}</td>
            <td class="mono">${short(r.reporterPeerId, 20)}</td>
            <td>${when(r.receivedAtMs)}</td>
          </tr>`,
        )}</tbody></table></div>
    </section>`;
  }

  jobSection(jobId, job) {
    if (job === null) return html`<section><h2>${jobId}</h2><p>Loading…</p></section>`;
    return html`<section aria-labelledby="job-heading" id="job">
      <h2 id="job-heading">${job.jobId} “${job.name}”</h2>
      <p>State: <strong class=${`status-${job.status}`} id="job-state">${job.status}</strong>${job.reason === "" ? "" : ` (${job.reason})`}${` · ${job.spec.shards} shard(s)`} · submitted ${when(job.submittedAtMs)}${job.endedAtMs === null ? "" : ` · ended ${when(job.endedAtMs)}`}</p>
      ${job.waiting === "" ? null : html`<p id="job-waiting">Waiting: ${job.waiting}</p>`}
      ${job.status === "open" ? html`<p><button type="button" class="danger" onClick=${() => this.cancel(job.jobId)}>Cancel job</button></p>` : null}
      <h3>Verdicts</h3>
      <ul id="verdicts">${job.acceptedDigests.map(
        (digest, shard) =>
          html`<li>shard ${shard}: ${digest === null ? "no result accepted yet" : html`accepted <span class="mono">${short(digest, 20)}</span>`}</li>`,
      )}</ul>
      <h3>Attempts</h3>
      ${
        job.attempts.length === 0
          ? html`<p>No attempts yet.</p>`
          : html`<div class="table"><table id="attempts">
              <thead><tr><th scope="col">Attempt</th><th scope="col">Shard</th><th scope="col">Worker</th><th scope="col">State</th><th scope="col">Outcome</th><th scope="col">Result</th></tr></thead>
              <tbody>${job.attempts.map(
                (a) => html`<tr>
                  <td>${a.attempt}</td><td>${a.shard}</td><td class="mono">${short(a.workerPeerId, 20)}</td><td>${a.state}</td>
                  <td class=${`outcome-${a.outcome}`}>${a.outcome ?? "–"}${a.exitCode === null ? "" : `, exit ${a.exitCode}`}</td>
                  <td class="mono">${short(a.resultDigest, 16)}</td>
                </tr>`,
              )}</tbody></table></div>`
      }
      <h3>Explain</h3>
      <pre id="explain">${this.state.explain}</pre>
      <h3>Logs</h3>
      <pre id="job-log">${this.state.jobLog}</pre>
    </section>`;
  }
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading…" placeholder goes: preact adds to what the element holds
render(h(App, null), root);
