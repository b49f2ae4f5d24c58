// The dead-letter console's only script: select, dry-run, confirm, then replay or purge.
// The page works as plain HTML for reading; this adds the actions, through the JSON API.
"use strict";

(function () {
  const base = document.body.dataset.base || "";
  const panel = document.getElementById("confirm");
  const message = document.getElementById("confirm-message");
  const confirmButton = document.getElementById("confirm-go");
  const cancelButton = document.getElementById("confirm-cancel");
  const flash = document.getElementById("flash");
  let pending = null;

  function show(text, kind) {
    flash.textContent = text;
    flash.className = "flash " + kind;
    flash.hidden = false;
  }

  const saved = sessionStorage.getItem("kafka-retry-flash");
  if (saved) {
    sessionStorage.removeItem("kafka-retry-flash");
    show(saved, "ok");
  }

  function selection(button) {
    const body = { topic: button.dataset.topic };
    if (button.dataset.scope === "selected") {
      body.ids = Array.from(document.querySelectorAll("input.pick:checked"), (box) => box.value);
      if (body.ids.length === 0) {
        return null;
      }
    } else if (button.dataset.scope === "group") {
      body.group = button.dataset.group;
    } else if (button.dataset.scope === "ids") {
      body.ids = JSON.parse(button.dataset.ids);
    } else {
      body.all = true;
    }
    const target = document.getElementById("target");
    if (button.dataset.action === "replay" && target && target.value) {
      body.to_tier = Number(target.value);
    }
    return body;
  }

  async function call(action, body) {
    const answer = await fetch(base + "/api/" + action, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await answer.json();
    if (!answer.ok) {
      throw new Error(data.error || answer.statusText);
    }
    return action === "replay" ? data.replayed : data.purged;
  }

  async function dryRun(button) {
    const action = button.dataset.action;
    const body = selection(button);
    if (body === null) {
      show("Select dead letters first.", "error");
      return;
    }
    try {
      const count = await call(action, Object.assign({}, body, { dry_run: true }));
      const verb = action === "replay" ? "Replay" : "Delete for good";
      message.textContent =
        count === 0
          ? "Nothing to " + action + ": the selection holds no dead letter that is not " +
            (action === "replay" ? "replayed already." : "gone already.")
          : verb + " " + count + " dead letter(s) of " + body.topic + "?";
      confirmButton.textContent = action === "replay" ? "Replay " + count : "Purge " + count;
      confirmButton.hidden = count === 0;
      confirmButton.className = action === "purge" ? "danger" : "primary";
      pending = count === 0 ? null : { action: action, body: body };
      panel.hidden = false;
      panel.scrollIntoView({ block: "nearest" });
      confirmButton.focus();
    } catch (error) {
      show(error.message, "error");
    }
  }

  async function go() {
    if (pending === null) {
      return;
    }
    const { action, body } = pending;
    pending = null;
    confirmButton.disabled = true;
    try {
      const count = await call(action, body);
      const done = action === "replay" ? "Replayed " : "Purged ";
      sessionStorage.setItem("kafka-retry-flash", done + count + " dead letter(s) of " + body.topic + ".");
      location.reload();
    } catch (error) {
      panel.hidden = true;
      confirmButton.disabled = false;
      show(error.message, "error");
    }
  }

  document.querySelectorAll("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => dryRun(button));
  });
  confirmButton.addEventListener("click", go);
  cancelButton.addEventListener("click", () => {
    pending = null;
    panel.hidden = true;
  });
  const all = document.getElementById("pick-all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll("input.pick").forEach((box) => {
        box.checked = all.checked;
      });
    });
  }
})();
