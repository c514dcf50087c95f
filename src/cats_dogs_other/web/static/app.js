// The page: a client of the service's own JSON API (GET version, POST predict, POST feedback), nothing more.
// Every URL is relative, so the page works behind a reverse proxy's path prefix too.
import { Session } from "./auth.js";

const pageUrl = new URL("./", window.location.href).href.split("?")[0];
const $ = (id) => document.getElementById(id);
const ui = {
  main: $("main"),
  model: $("model"),
  account: $("account"),
  who: $("who"),
  signIn: $("sign-in"),
  signOut: $("sign-out"),
  notice: $("notice"),
  drop: $("drop"),
  input: $("files"),
  status: $("status"),
  results: $("results"),
  kept: $("kept"),
  keptWhat: $("kept-what"),
  keptDelete: $("kept-delete"),
  erase: $("erase"),
  eraseStart: $("erase-start"),
  eraseConfirm: $("erase-confirm"),
  eraseYes: $("erase-yes"),
  eraseNo: $("erase-no"),
  eraseStatus: $("erase-status"),
};

let model = null; // /version's `model`: name, labels, outputs_are_probabilities, sha256, …
let feedback = { enabled: false }; // /version's `feedback`: enabled, required_scope, retention_days, …
let session = null;
let busy = false;

// Creates an element with properties and children; text is always set as text, never parsed as HTML.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// One message at a time: a problem (red) or, with `info`, what to do next (not an error).
function notify(message, info = false) {
  ui.notice.textContent = message || "";
  ui.notice.hidden = !message;
  ui.notice.classList.toggle("info", info);
}

function setBusy(message) {
  busy = Boolean(message);
  ui.main.setAttribute("aria-busy", String(busy));
  ui.drop.classList.toggle("busy", busy);
  ui.status.classList.toggle("working", busy);
  ui.status.textContent = message || "";
  refreshControls();
}

// Uploading is possible when no sign-in is needed, or once signed in.
function refreshControls() {
  const allowed = session !== null && (!session.required || session.signedIn);
  ui.input.disabled = busy || !allowed;
  ui.drop.classList.toggle("disabled", !allowed);
  if (!session || !session.required) {
    ui.account.hidden = true;
    return;
  }
  ui.account.hidden = false;
  ui.signIn.hidden = !session.configured || session.signedIn;
  ui.signOut.hidden = !session.signedIn;
  ui.who.textContent = session.signedIn ? `Signed in as ${session.displayName}` : "Not signed in";
  ui.erase.hidden = !feedback.enabled || !session.signedIn;
}

// Says, before anything is sent, what pressing Right or Wrong keeps, for how long, and how to delete it.
function describeKept() {
  ui.kept.hidden = !feedback.enabled;
  if (!feedback.enabled) return;
  const signed = session.required;
  const days = feedback.retention_days;
  const howLong = days ? `for ${days} days after your last change` : "until it is deleted";
  ui.keptWhat.textContent =
    "A copy of that image, at most 512 pixels a side and without its metadata (no location, no camera " +
    `details), and the label you chose, ${signed ? "with your account's id at your sign-in provider (not your name or e-mail)" : "anonymously"}, ` +
    `${howLong}, as training data for the next model.` +
    (signed ? "" : " To count the daily quota, a hash of your network address is kept with it.");
  ui.keptDelete.textContent = signed
    ? "You can delete everything you sent at any time, here, once signed in."
    : "Nothing in it names you, so only the operator of this service can delete it.";
}

function percent(value) {
  return `${(value * 100).toFixed(value >= 0.995 || value < 0.005 ? 0 : 1)}%`;
}

// The answer under an image: its label, and one bar per class with its value.
function answerBlock(prediction) {
  const probabilities = model.outputs_are_probabilities;
  const best = prediction.values[model.labels.indexOf(prediction.prediction)];
  const caption = el(
    "p",
    { class: "answer" },
    el("strong", { class: "label", text: prediction.prediction }),
    probabilities ? el("span", { class: "score", text: ` ${percent(best)}` }) : null,
  );
  const bars = el("dl", { class: "bars" });
  model.labels.forEach((label, index) => {
    const value = prediction.values[index];
    const meter = el("meter", { min: 0, max: 1, value: probabilities ? value : 0, "aria-label": label });
    bars.append(
      el("dt", { text: label }),
      el("dd", {}, probabilities ? meter : null, el("span", { text: probabilities ? percent(value) : value.toFixed(3) })),
    );
  });
  return [caption, bars];
}

function problemText(problem) {
  return problem.detail || problem.title || "This file could not be classified.";
}

function thumbnail(src, alt) {
  return src ? el("img", { src, alt, class: "thumb", loading: "lazy" }) : el("div", { class: "thumb none", "aria-hidden": "true" });
}

function imageCard(answer, file) {
  const name = answer.filename || file?.name || "image";
  if (answer.error) {
    return el(
      "article",
      { class: "card failed", "data-file": name },
      el("h3", { text: name }),
      el("p", { class: "error", text: `Not classified: ${problemText(answer.error)}` }),
    );
  }
  const src = answer.thumbnail || (file ? URL.createObjectURL(file) : null);
  return el(
    "article",
    { class: "card result", "data-file": name, "data-label": answer.prediction },
    thumbnail(src, `${name}: ${answer.prediction}`),
    el("div", { class: "details" }, el("h3", { text: name }), ...answerBlock(answer), feedbackControls(file, answer.prediction)),
  );
}

// "Right" / "Wrong → the right label" under an answer, when the service keeps feedback: the file (and,
// for a PDF, the image's page and index) goes to POST feedback with the label the person picked.
// Picking again replaces that person's label; the buttons show the one last saved.
function feedbackControls(file, prediction, where = null) {
  if (!feedback.enabled || !file) return null;
  const status = el("p", { class: "feedback-status", "aria-live": "polite" });
  const right = el("button", { type: "button", class: "verdict", text: "Right", "aria-pressed": "false" });
  const wrong = el("button", { type: "button", class: "verdict", text: "Wrong…", "aria-expanded": "false" });
  const others = model.labels.filter((label) => label !== prediction);
  const choices = el(
    "div",
    { class: "choices", hidden: true, role: "group", "aria-label": "The right label" },
    el("span", { class: "muted", text: "It is:" }),
    ...others.map((label) => el("button", { type: "button", class: "choice", "data-label": label, text: label, "aria-pressed": "false" })),
  );
  const box = el(
    "div",
    { class: "feedback", role: "group", "aria-label": "Is this answer right?" },
    el("span", { class: "muted", text: "Is this right?" }),
    right,
    wrong,
    choices,
    status,
    el("a", { href: "#kept", class: "kept-link muted", text: "What is kept?" }),
  );
  const buttons = () => box.querySelectorAll("button");
  async function send(label, pressed) {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("label", label);
    form.append("predicted", prediction);
    if (model.sha256) form.append("model_sha256", model.sha256);
    if (where) {
      form.append("page", String(where.page));
      form.append("index", String(where.index));
    }
    buttons().forEach((button) => (button.disabled = true));
    status.className = "feedback-status";
    status.textContent = "Saving…";
    try {
      let response;
      try {
        response = await fetch("feedback", { method: "POST", body: form, headers: session.authorization() });
      } catch {
        status.className = "feedback-status error";
        status.textContent = "Not saved: the service could not be reached.";
        return;
      }
      if (!response.ok) {
        const message = await explain(response, feedback.required_scope);
        status.className = "feedback-status error";
        status.textContent = message ? `Not saved: ${message}` : "";
        return;
      }
      box.querySelectorAll("[aria-pressed]").forEach((button) => button.setAttribute("aria-pressed", "false"));
      pressed.setAttribute("aria-pressed", "true");
      box.dataset.sent = label;
      status.textContent = label === prediction ? "Thanks: confirmed." : `Thanks: saved as ${label}.`;
    } finally {
      buttons().forEach((button) => (button.disabled = false));
    }
  }
  right.addEventListener("click", () => send(prediction, right));
  wrong.addEventListener("click", () => {
    choices.hidden = !choices.hidden;
    wrong.setAttribute("aria-expanded", String(!choices.hidden));
    if (!choices.hidden) choices.querySelector("button")?.focus();
  });
  choices.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (button) send(button.dataset.label, button);
  });
  return box;
}

const position = (image) => `page ${image.page + 1}, image ${image.index + 1}`;

// A PDF: one tile per distinct image in page order; a repeated image is noted on its first tile.
function documentCard(answer, file) {
  const name = answer.filename || "document.pdf";
  const copies = new Map();
  for (const image of answer.images) {
    if (!image.duplicate_of) continue;
    const key = `${image.duplicate_of.page}/${image.duplicate_of.index}`;
    copies.set(key, [...(copies.get(key) || []), image]);
  }
  const distinct = answer.images.filter((image) => !image.duplicate_of);
  const summary =
    `${answer.pages} page${answer.pages === 1 ? "" : "s"}, ` +
    `${distinct.length} distinct image${distinct.length === 1 ? "" : "s"}` +
    (distinct.length !== answer.images.length ? ` (${answer.images.length} with repeats)` : "");
  const tiles = el("ol", { class: "tiles" });
  for (const image of distinct) {
    const where = position(image);
    const repeats = copies.get(`${image.page}/${image.index}`) || [];
    const repeated = repeats.length
      ? el("p", { class: "repeat muted", text: `Also at ${repeats.map(position).join("; ")}` })
      : null;
    if (image.error) {
      tiles.append(
        el(
          "li",
          { class: "tile failed", "data-page": image.page, "data-index": image.index },
          el("p", { class: "where", text: where }),
          el("p", { class: "error", text: problemText(image.error) }),
        ),
      );
      continue;
    }
    tiles.append(
      el(
        "li",
        { class: "tile result", "data-page": image.page, "data-index": image.index, "data-label": image.prediction },
        thumbnail(image.thumbnail, `${name}, ${where}: ${image.prediction}`),
        el("p", { class: "where", text: where[0].toUpperCase() + where.slice(1) }),
        ...answerBlock(image),
        repeated,
        feedbackControls(file, image.prediction, image),
      ),
    );
  }
  return el(
    "article",
    { class: "card document", "data-file": name },
    el("h3", { text: name }),
    el("p", { class: "muted", text: summary }),
    distinct.length ? tiles : el("p", { text: "No images in this document." }),
  );
}

async function readProblem(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      // fall through: a body that is not the JSON it claims
    }
  }
  return { status: response.status, detail: `The service answered ${response.status} ${response.statusText}.` };
}

// What the API refused, in its own words, with what a person can do about it (`scope`: the one the
// refused call needs).
async function explain(response, scope = session.auth.required_scope) {
  const problem = await readProblem(response);
  const detail = problemText(problem);
  if (response.status === 401 && session.required) {
    await session.end(`The service did not accept your sign-in: ${detail} Sign in again.`);
    return null;
  }
  if (response.status === 403) {
    return `Access denied: ${detail} Ask whoever runs your sign-in to grant your account the scope “${scope}”.`;
  }
  const retry = response.headers.get("retry-after");
  const later = response.status === 503 && retry ? ` Try again in ${retry} second${retry === "1" ? "" : "s"}.` : "";
  const id = problem.request_id ? ` (request id ${problem.request_id})` : "";
  return `${detail}${later}${id}`;
}

async function classify(files) {
  if (busy || !files.length || ui.input.disabled) return;
  notify(null);
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  setBusy(`Classifying ${files.length} file${files.length === 1 ? "" : "s"}…`);
  try {
    let response;
    try {
      response = await fetch("predict?thumbnails=true", { method: "POST", body: form, headers: session.authorization() });
    } catch {
      notify("The service could not be reached. Check the connection and try again.");
      return;
    }
    if (!response.ok) {
      const message = await explain(response);
      if (message) notify(message);
      return;
    }
    const answers = await response.json();
    ui.results.replaceChildren(
      ...answers.map((answer, index) =>
        answer.images ? documentCard(answer, files[index]) : imageCard(answer, files[index]),
      ),
    );
    const failed = answers.filter((answer) => answer.error).length;
    ui.status.textContent = "";
    setBusy(null);
    ui.status.textContent =
      `Answered ${answers.length} file${answers.length === 1 ? "" : "s"}` + (failed ? `; ${failed} could not be classified.` : ".");
    return;
  } finally {
    if (busy) setBusy(null);
    ui.input.value = "";
  }
}

function wireInputs() {
  ui.input.addEventListener("change", () => classify([...ui.input.files]));
  ui.drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    ui.drop.classList.add("over");
  });
  ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("over"));
  ui.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.drop.classList.remove("over");
    classify([...(event.dataTransfer?.files || [])]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) classify(files);
  });
  ui.signIn.addEventListener("click", async () => {
    try {
      await session.signIn();
    } catch (error) {
      notify(`Could not reach the sign-in service: ${error.message || error}`);
    }
  });
  ui.signOut.addEventListener("click", () => session.signOut());
  const confirming = (shown) => {
    ui.eraseConfirm.hidden = !shown;
    ui.eraseStart.hidden = shown;
    if (shown) ui.eraseNo.focus();
  };
  ui.eraseStart.addEventListener("click", () => {
    ui.eraseStatus.textContent = "";
    confirming(true);
  });
  ui.eraseNo.addEventListener("click", () => {
    confirming(false);
    ui.eraseStart.focus();
  });
  ui.eraseYes.addEventListener("click", async () => {
    ui.eraseYes.disabled = true;
    ui.eraseStatus.className = "erase-status";
    ui.eraseStatus.textContent = "Deleting…";
    try {
      const response = await fetch("feedback", { method: "DELETE", headers: session.authorization() });
      if (!response.ok) {
        ui.eraseStatus.className = "erase-status error";
        ui.eraseStatus.textContent = `Not deleted: ${await explain(response, feedback.required_scope)}`;
        return;
      }
      const erased = await response.json();
      ui.eraseStatus.textContent = `Deleted: ${erased.labels} of your labels and ${erased.images} images.`;
      document.querySelectorAll(".feedback[data-sent]").forEach((box) => {
        delete box.dataset.sent;
        box.querySelectorAll("[aria-pressed]").forEach((button) => button.setAttribute("aria-pressed", "false"));
      });
    } catch {
      ui.eraseStatus.className = "erase-status error";
      ui.eraseStatus.textContent = "Not deleted: the service could not be reached.";
    } finally {
      ui.eraseYes.disabled = false;
      confirming(false);
    }
  });
}

function describeModel(info) {
  const version = info.model.registry_version ? ` version ${info.model.registry_version}` : "";
  ui.model.textContent = `Model ${info.model.name}${version} (${info.model.labels.join(", ")}) · service ${info.version}`;
}

async function start() {
  wireInputs();
  let info;
  try {
    const response = await fetch("version");
    if (!response.ok) throw new Error(problemText(await readProblem(response)));
    info = await response.json();
  } catch (error) {
    ui.model.textContent = "";
    notify(`The service is not ready: ${error.message || error} Reload the page in a moment.`);
    return;
  }
  model = info.model;
  feedback = info.feedback || { enabled: false };
  describeModel(info);
  const feedbackScope = feedback.enabled && feedback.required_scope ? [feedback.required_scope] : [];
  session = new Session(info.auth, pageUrl, feedbackScope);
  session.onChange = (message) => {
    refreshControls();
    if (message) notify(message);
  };
  if (session.required && !session.configured) {
    notify(
      "Sign-in is not configured: this service needs a token from " +
        `${info.auth.issuer}, and its page has no OAuth2 client (OAUTH2_CLIENT_ID). ` +
        "Use the API with a token (see the API docs), or ask the operator to set it.",
    );
  }
  describeKept();
  const failure = await session.resume();
  if (failure) notify(failure);
  else if (session.required && session.configured && !session.signedIn) notify("Sign in to classify images.", true);
  refreshControls();
}

start();
