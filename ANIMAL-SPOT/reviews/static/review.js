// The review page: one item at a time, answers through the HTTP interface (review.py).
"use strict";
const $ = (id) => document.getElementById(id);
const client = sessionStorage.getItem("review-client") || Math.random().toString(36).slice(2);
sessionStorage.setItem("review-client", client);
let current = null;
let expansion = 1;
let busy = false;
let learnerPoll = null;

async function api(path, body) {
  const options = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text) { $("message").textContent = text || ""; }

async function loadClasses() {
  const data = await api("/api/classes");
  const filter = $("class-filter");
  if (filter.options.length === 1) {
    for (const c of data.classes) filter.add(new Option(c.name, c.name));
    for (const name of data.labels) $("labels").append(new Option(name));
    expansion = data.expansion;
    for (const f of [1, 2, 4, 8, 10, 16, 20]) $("expansion").add(new Option(`${f}x`, f));
    $("expansion").value = String(expansion);
    $("similar").hidden = !data.search;
  }
  $("progress").replaceChildren(...data.classes.map((c) => {
    const row = document.createElement("div");           // class names are data: text nodes, never HTML
    row.className = "bar";
    const name = document.createElement("span");
    name.textContent = c.name;
    const bar = document.createElement("progress");
    bar.max = c.planned;
    bar.value = c.answered;
    row.append(name, bar, document.createTextNode(` ${c.answered} / ${c.planned}`));
    return row;
  }));
  if (data.learner) {
    $("learner").hidden = false;
    $("learner").textContent = data.learner;
    clearTimeout(learnerPoll);                             // a head is being fitted: look again until it is
    if (data.learner.includes("fitting")) learnerPoll = setTimeout(() => loadClasses().catch(() => {}), 1500);
  }
}

function show(item) {
  current = item;
  $("done").hidden = item !== null;
  $("item").hidden = item === null;
  if (item === null) return;
  $("label").textContent = item.label;
  $("score").textContent = item.score === null ? "" : `score ${item.score.toFixed(3)}`;
  const flags = [];
  if (item.label === "unknown") flags.push("UNKNOWN (unlike every trained class)");
  if (!item.above_threshold) flags.push("below threshold");
  if (item.how !== "random") flags.push(item.how);
  $("flags").textContent = flags.join(" · ");
  $("where").textContent = `${item.recording}  ${item.begin.toFixed(3)}–${item.end.toFixed(3)} s` +
    (item.channel !== 1 ? `  channel ${item.channel}` : "");
  $("alternatives").textContent = item.alternatives.length ?
    "alternatives: " + item.alternatives.map(([n, p]) => `${n} ${p.toFixed(3)}`).join(", ") : "";
  $("spectrogram").src = item.image;
  $("audio").src = `/media/audio/${item.item}.wav?expand=${expansion}`;
  $("comment").value = "";
  $("other-box").hidden = true;
}

async function next() {
  const filter = $("class-filter").value;
  const query = new URLSearchParams({client});
  if (filter) query.set("class", filter);
  const data = await api(`/api/next?${query}`);
  show(data.item === null ? null : data);
}

async function decide(decision, label) {
  if (!current || busy) return;
  busy = true;
  try {
    await api("/api/decision", {item: current.item, decision, label: label || "", comment: $("comment").value, client});
    say("");
    await loadClasses();
    await next();
  } catch (error) { say(error.message); } finally { busy = false; }
}

async function undo() {
  if (busy) return;
  busy = true;
  try {
    const data = await api("/api/undo", {client});
    say(data.undone ? "undone" : "nothing to undo");
    await loadClasses();
    await next();
  } catch (error) { say(error.message); } finally { busy = false; }
}

function other() {
  $("other-box").hidden = false;
  $("other-label").value = "";
  $("other-label").focus();
}

async function similar() {
  if (!current) return;
  try {
    const data = await api("/api/similar", {item: current.item});
    say(`${data.queued} similar item(s) queued`);
  } catch (error) { say(error.message); }
}

for (const button of document.querySelectorAll("#buttons [data-decision]")) {
  button.addEventListener("click", () => button.dataset.decision === "other" ? other() : decide(button.dataset.decision));
}
$("undo").addEventListener("click", undo);
$("similar").addEventListener("click", similar);
$("other-ok").addEventListener("click", () => decide("other", $("other-label").value));
$("class-filter").addEventListener("change", next);
$("expansion").addEventListener("change", () => {
  expansion = Number($("expansion").value);
  if (current) $("audio").src = `/media/audio/${current.item}.wav?expand=${expansion}`;
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.tagName === "INPUT";
  if (typing) {
    if (event.key === "Enter" && event.target.id === "other-label") decide("other", $("other-label").value);
    if (event.key === "Escape") event.target.blur();
    return;
  }
  const keys = {c: () => decide("correct"), "1": () => decide("correct"), w: () => decide("wrong"),
    x: () => decide("wrong"), "2": () => decide("wrong"), o: other, "3": other, u: () => decide("unsure"),
    "4": () => decide("unsure"), s: () => decide("skip"), "5": () => decide("skip"), z: undo, Backspace: undo,
    m: similar, " ": () => ($("audio").paused ? $("audio").play() : $("audio").pause()),
    t: () => {
      const select = $("expansion");
      select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
      select.dispatchEvent(new Event("change"));
    }};
  if (keys[event.key]) {
    event.preventDefault();
    keys[event.key]();
  }
});

loadClasses().then(next).catch((error) => say(error.message));
