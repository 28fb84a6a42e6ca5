// The uem page: pick, drop or draw a picture, search a domain, show the hits or "no match".
// Plain JavaScript served as is (no build step, nothing loaded from elsewhere). Every URL is
// relative to the page, so the page also works served under a path prefix (behind a proxy).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const domainSel = $("domain"), sourceSel = $("source"), kSel = $("k"), noReject = $("no-reject");
  const fileInput = $("file"), drop = $("drop"), preview = $("preview"), dropText = $("drop-text");
  const pad = $("pad"), pen = $("pen"), ink = $("ink");
  const statusEl = $("status"), banner = $("banner"), grid = $("grid");
  let lastQuery = null;        // {blob, label}: re-run when the domain or options change
  let inFlight = null;         // AbortController of the running request
  let padDirty = false;

  // ---- domains ------------------------------------------------------------------------------
  async function loadDomains() {
    try {
      const r = await fetch("v1/domains");
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || r.statusText);
      const names = body.domains.map((d) => d.name);
      const saved = localStorage.getItem("uem.domain");
      for (const d of body.domains) {
        domainSel.add(new Option(`${d.name} (${d.count})`, d.name));
        sourceSel.add(new Option(`from ${d.name}`, d.name));
      }
      domainSel.value = names.includes(saved) ? saved : names[names.length - 1];
      $("bundle-facts").textContent = `${names.length} collections, ${body.domains.reduce((a, d) => a + d.count, 0)} pictures`;
    } catch (e) {
      showError(`Cannot reach the service: ${e.message}`);
    }
  }

  // ---- asking -------------------------------------------------------------------------------
  async function search(blob, label) {
    lastQuery = { blob, label };
    if (!domainSel.value) return;
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    const form = new FormData();
    form.append("image", blob, label);
    form.append("domain", domainSel.value);
    if (sourceSel.value) form.append("from", sourceSel.value);
    form.append("k", kSel.value);
    form.append("no_reject", noReject.checked ? "true" : "false");
    statusEl.textContent = `Searching ${domainSel.value}…`;
    document.body.classList.add("busy");
    try {
      const r = await fetch("v1/query", { method: "POST", body: form, signal: inFlight.signal });
      let body;
      try { body = await r.json(); } catch (_) { body = { error: `${r.status} ${r.statusText}` }; }
      if (!r.ok) { showError(body.error || `${r.status} ${r.statusText}`); return; }
      show(body, label);
    } catch (e) {
      if (e.name !== "AbortError") showError(`The search failed: ${e.message}`);
    } finally {
      document.body.classList.remove("busy");
    }
  }

  function show(res, label) {
    const where = res.source ? ` (recognised as ${res.source})` : "";
    statusEl.textContent = `${label}${where} → ${res.domain}: ${res.hits.length} shown, ${res.took_ms.toFixed(0)} ms`;
    banner.hidden = false;
    const weak = res.accepted && /^weak match/i.test(res.reason);
    banner.className = "banner " + (res.accepted ? (weak ? "weak" : "match") : "nomatch");
    banner.dataset.accepted = String(res.accepted);
    $("banner-title").textContent = res.accepted
      ? (weak ? `Weak match in ${res.domain}` : `Match in ${res.domain}`)
      : `No match in ${res.domain}`;
    $("banner-reason").textContent = res.reason;
    grid.replaceChildren(...res.hits.map((h, i) => card(h, i + 1, res.domain)));
    bringIntoView();
  }

  // On a phone the answer sits below the inputs: scroll to it when it is out of sight.
  function bringIntoView() {
    const top = $("answer-title").getBoundingClientRect().top;
    if (top > window.innerHeight * 0.6 || top < 0) $("answer-title").scrollIntoView({ block: "start" });
  }

  function card(hit, rank, domain) {
    const fig = document.createElement("figure");
    fig.className = "hit";
    const img = document.createElement("img");
    // relative to the page, so it works behind a proxy's path prefix too
    img.src = `v1/items/${encodeURIComponent(domain)}/${encodeURIComponent(hit.id)}/image`;
    img.alt = hit.id;
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => fig.classList.add("noimage"), { once: true });
    const cap = document.createElement("figcaption");
    const rs = hit.rank_score === null ? "" : ` · rank ${hit.rank_score.toFixed(3)}`;
    const rankEl = document.createElement("b");
    rankEl.textContent = `#${rank}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = ` ${hit.score.toFixed(3)}${rs}`;
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = hit.id.split("/").pop();
    id.title = hit.id;
    cap.append(rankEl, score, document.createElement("br"), id);
    fig.append(img, cap);
    return fig;
  }

  function showError(message) {
    banner.hidden = false;
    banner.className = "banner error";
    banner.dataset.accepted = "";
    $("banner-title").textContent = "Could not search";
    $("banner-reason").textContent = message;
    statusEl.textContent = "";
    grid.replaceChildren();
    bringIntoView();
  }

  // ---- picking and dropping -----------------------------------------------------------------
  function usePicture(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) { showError(`${file.name} is not a picture`); return; }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    dropText.textContent = file.name;
    search(file, file.name);
  }

  fileInput.addEventListener("change", () => usePicture(fileInput.files[0]));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); } });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); usePicture(e.dataTransfer.files[0]); });

  // ---- the sketch pad (pointer events: mouse, pen and finger alike) ---------------------------
  const ctx = pad.getContext("2d");
  function clearPad() {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    padDirty = false;
  }
  function at(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
  }
  let drawing = null;
  pad.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    drawing = { id: e.pointerId, last: at(e) };
    ctx.strokeStyle = ink.value;
    ctx.fillStyle = ink.value;
    ctx.lineWidth = Number(pen.value) * (pad.width / 512);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const [x, y] = drawing.last;
    ctx.beginPath();
    ctx.arc(x, y, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
    padDirty = true;
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing || e.pointerId !== drawing.id) return;
    const points = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    ctx.beginPath();
    ctx.moveTo(...drawing.last);
    for (const p of points.length ? points : [e]) {
      drawing.last = at(p);
      ctx.lineTo(...drawing.last);
    }
    ctx.stroke();
  });
  const endStroke = (e) => { if (drawing && e.pointerId === drawing.id) drawing = null; };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  $("pad-clear").addEventListener("click", clearPad);
  $("pad-search").addEventListener("click", () => {
    if (!padDirty) { showError("Draw something on the sketch pad first"); return; }
    pad.toBlob((blob) => { if (blob) search(blob, "your drawing"); }, "image/png");
  });

  // ---- options re-run the last question -----------------------------------------------------
  for (const el of [domainSel, sourceSel, kSel, noReject]) {
    el.addEventListener("change", () => {
      if (el === domainSel) localStorage.setItem("uem.domain", domainSel.value);
      if (lastQuery) search(lastQuery.blob, lastQuery.label);
    });
  }

  clearPad();
  loadDomains();
})();
