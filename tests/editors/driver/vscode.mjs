// Drives code-server in headless Chromium for tests/editors/test_vscode.py and prints one
// JSON object with what it saw. It asserts nothing itself: the pytest side decides.
//
//   node vscode.mjs '{"scenario": "edit" | "startupError" | "manualTrigger", "url": ...,
//                     "chromium": ..., "workspace": ..., "screenshots": ..., "timeoutMs": N, ...}'
//
// edit (the default; completionFile, typed, holeFile, holeLine): wait for the workbench and
// Coda's "ready" status-bar item; open completionFile, type at its end, wait for the ghost
// text, press Tab, save; open holeFile, put the cursor on the `...` line, run "Coda: Fill
// hole" from the command palette, wait for the edit, save; run "Coda: Toggle completions" and
// wait for the status bar to show them off.
// startupError: wait for Coda's status-bar item to show an error and for an error
// notification, give a restart loop `quietMs` to show itself, then read every notification
// (with its buttons). With `againCommand`: run it (a restart that fails the same way) and read
// the error toasts on screen after `quietMs`. With `recoverFiles` ({path: content}) and `recoverCommand`: then fix the
// cause by writing those files, run that command, wait for Coda's "ready" item and read which
// error toasts are still on screen.
// refusedFill (holeFile, holeLine, choice): run "Coda: Fill hole" on a hole the server refuses,
// read the warning toast and its buttons and whether the editor changed, click `choice`, wait
// for the edit and save.
// pickedFill (holeFile, holeLine, pick): run "Coda: Fill hole" on a hole where several fills
// pass, read the quick pick's rows, which one is focused and whether the editor changed,
// press Esc and read that again; then run it again, move down `pick` rows, press Enter and
// save.
// cycle (completionFile, triggerLine, triggerKey): ask for a suggestion by hand at the end of
// triggerLine, read the ghost text, show the next and the previous candidate (Alt+] / Alt+[,
// VS Code's own keys), accept the one shown with Tab and save.
// manualTrigger (completionFile, triggerLine, triggerKey): put the cursor at the end of
// triggerLine without typing, press triggerKey and wait for the ghost text.
// downloadThenCancel (holeFile, holeLine, scriptLog): open holeFile and record every text
// Coda's status item shows until it is ready (a Hub model's download percent meanwhile); then
// run "Coda: Fill hole" with a slow scripted model, click Cancel on the progress notification
// once the model runs (scriptLog says "started"), wait for the model to say it stopped, and
// read whether the editor changed and which error toasts are up.
// Screenshots go to `screenshots`. Each wait is on a DOM condition, never a fixed delay,
// except startupError's quiet period, which waits for something NOT to happen.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const args = JSON.parse(process.argv[2]);
const timeout = args.timeoutMs ?? 90000;
const result = { steps: [] };
const log = (step, extra = {}) => result.steps.push({ step, t: Date.now(), ...extra });

// Save the active editor and return the file's content once VS Code reports it written (its
// tab loses the "dirty" mark only after the write has finished).
async function saveAndRead(page, file) {
  const name = path.basename(file);
  await page.locator(`.tab.active.dirty[data-resource-name="${name}"]`).waitFor({ timeout });
  await page.keyboard.press("Control+S");
  await page.locator(`.tab.active:not(.dirty)[data-resource-name="${name}"]`).waitFor({ timeout });
  return fs.readFileSync(file, "utf8");
}

async function openFile(page, name) {
  await page.keyboard.press("Control+P");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout });
  await input.fill(name);
  // Enter only once the filtered list has put this file first (not the recent one).
  await page.locator(".quick-input-list .monaco-list-row.focused", { hasText: name }).waitFor({ timeout });
  await page.keyboard.press("Enter");
  await page.locator(`.tab.active[data-resource-name="${name}"]`).waitFor({ timeout });
  const editor = page.locator(".editor-instance .monaco-editor").first();
  await editor.waitFor({ timeout });
  await editor.locator(".view-lines").click();
  return editor;
}

async function goToLine(page, line) {
  await page.keyboard.press("Control+G");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout });
  await input.fill(`:${line}`);
  await page.keyboard.press("Enter");
  // The palette is gone: the widget hides, or a quick pick the command opened (Fill hole's
  // choice of fills) takes it over with an input that is no longer ">command".
  await page.waitForFunction(() => {
    const el = document.querySelector(".quick-input-widget input");
    return !el || el.offsetParent === null || !el.value.startsWith(">");
  }, null, { timeout });
}

async function runCommand(page, title) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout });
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout });
  await page.keyboard.press("Enter");
  // The palette is gone: the widget hides, or a quick pick the command opened (Fill hole's
  // choice of fills) takes it over with an input that is no longer ">command".
  await page.waitForFunction(() => {
    const el = document.querySelector(".quick-input-widget input");
    return !el || el.offsetParent === null || !el.value.startsWith(">");
  }, null, { timeout });
}

const statusItem = (page) => page.locator('[id="coda-lsp.coda-lsp.coda.status"]');

async function edit(page) {
  const status = statusItem(page);
  const ready = status.locator(".codicon-sparkle");

  // --- ghost text and Tab ---
  const sample = path.join(args.workspace, args.completionFile);
  const editor = await openFile(page, args.completionFile);
  await ready.waitFor({ timeout });
  log("ready", { status: await status.getAttribute("aria-label") });
  await page.keyboard.press("Control+End");
  await page.keyboard.type(args.typed, { delay: 20 });
  const ghost = editor.locator(".ghost-text-decoration, .ghost-text");
  await ghost.first().waitFor({ state: "visible", timeout });
  result.ghostText = await ghostText(editor);
  log("ghost", { text: result.ghostText });
  await page.screenshot({ path: path.join(args.screenshots, "vscode-ghost-text.png") });
  await page.keyboard.press("Tab");
  await ghost.first().waitFor({ state: "hidden", timeout });
  result.afterTab = await saveAndRead(page, sample);
  result.statusAfterCompletion = await status.getAttribute("aria-label");
  log("accepted");

  // --- Fill hole ---
  const hole = path.join(args.workspace, args.holeFile);
  await openFile(page, args.holeFile);
  await goToLine(page, args.holeLine);
  await page.keyboard.press("End"); // on the `...`, not in the indentation before it
  await runCommand(page, "Coda: Fill hole");
  // The server's workspace/applyEdit makes the editor dirty. A tiny test model's fills rarely
  // parse: where the server refuses, take its "Fill anyway" (refusals have their own test);
  // where several pass, take the best from the pick (picking has its own test).
  const dirty = page.locator(`.tab.active.dirty[data-resource-name="${args.holeFile}"]`);
  const anyway = page.locator(".notification-toast .monaco-button", { hasText: "Fill anyway (" });
  const pick = fillPick(page);
  await dirty.or(anyway).or(pick).first().waitFor({ timeout });
  if (await pick.isVisible()) {
    result.picked = true;
    await page.keyboard.press("Enter");
    await dirty.waitFor({ timeout });
  } else if (!(await dirty.count())) {
    result.filledAnyway = true;
    await anyway.first().click();
    await dirty.waitFor({ timeout });
  }
  await page.screenshot({ path: path.join(args.screenshots, "vscode-fill-hole.png") });
  result.afterFill = await saveAndRead(page, hole);
  log("filled");

  // --- Toggle completions: the setting flips and the status bar says so ---
  await runCommand(page, "Coda: Toggle completions");
  await status.locator(".codicon-circle-slash").waitFor({ timeout });
  result.statusAfterToggle = await status.getAttribute("aria-label");
  log("toggled");
}

// Inline parts are token spans; lines below the cursor come as separate view-zone lines.
async function ghostText(editor) {
  const inline = (await editor.locator(".ghost-text-decoration").allTextContents()).join("");
  const below = await editor.locator(".ghost-text .view-line").allTextContents();
  return [inline, ...below].join("\n").replace(/\u00a0/g, " ");
}

async function startupError(page) {
  const status = statusItem(page);
  await status.locator(".codicon-error").waitFor({ timeout });
  await page.locator(".notification-toast .codicon-error").first().waitFor({ timeout });
  log("error shown", { status: await status.getAttribute("aria-label") });
  await page.waitForTimeout(args.quietMs ?? 5000); // a restart loop would go on meanwhile
  result.statusAfterError = await status.getAttribute("aria-label");
  await page.screenshot({ path: path.join(args.screenshots, "vscode-startup-error.png") });
  // The notification center lists every notification, also those whose toast has gone.
  result.notifications = await readNotifications(page);
  log("notifications", { count: result.notifications.length });
  if (args.againCommand) {
    // The same failure once more (e.g. a restart before the fix): toasts must not pile up.
    await runCommand(page, args.againCommand);
    await page.waitForTimeout(args.quietMs ?? 5000);
    result.errorToastsAfterAgain = await toastMessages(page, "error");
  }
  if (args.recoverFiles) {
    await recover(page);
  }
}

async function readNotifications(page) {
  await runCommand(page, "Notifications: Show Notifications");
  const center = page.locator(".notifications-center");
  await center.waitFor({ state: "visible", timeout });
  const found = [];
  for (const item of await center.locator(".notification-list-item").all()) {
    const icon = (await item.locator(".notification-list-item-icon").getAttribute("class")) ?? "";
    const severity = ["error", "warning", "info"].find((name) => icon.includes(`codicon-${name}`));
    const message = await item.locator(".notification-list-item-message").textContent();
    const buttons = await item.locator(".notification-list-item-buttons-container .monaco-button").allTextContents();
    found.push({ severity: severity ?? icon, message, buttons });
  }
  await runCommand(page, "Notifications: Hide Notifications");
  return found;
}

async function toastMessages(page, severity) {
  return page.locator(`.notification-toast:has(.codicon-${severity}) .notification-list-item-message`).allTextContents();
}

async function recover(page) {
  for (const [file, content] of Object.entries(args.recoverFiles)) {
    fs.writeFileSync(file, content);
  }
  await runCommand(page, args.recoverCommand);
  await statusItem(page).locator(".codicon-sparkle").waitFor({ timeout });
  log("recovered");
  // The toast goes as the server comes up; a toast that stays is what this looks for.
  await page.locator(".notification-toast .codicon-error").first().waitFor({ state: "hidden", timeout: 10000 }).catch(() => {});
  result.errorToastsAfterRecovery = await toastMessages(page, "error");
  result.statusAfterRecovery = await statusItem(page).getAttribute("aria-label");
  await page.screenshot({ path: path.join(args.screenshots, "vscode-recovered.png") });
}

async function refusedFill(page) {
  await openFile(page, args.holeFile);
  await statusItem(page).locator(".codicon-sparkle").waitFor({ timeout });
  await goToLine(page, args.holeLine);
  await page.keyboard.press("End");
  await runCommand(page, "Coda: Fill hole");
  const toast = page.locator(".notification-toast", { hasText: "no fill for this hole" });
  await toast.first().waitFor({ timeout });
  result.refusal = await toast.first().locator(".notification-list-item-message").textContent();
  result.refusalButtons = await toast.first().locator(".monaco-button").allTextContents();
  result.dirtyBeforeChoice = await page.locator(`.tab.active.dirty[data-resource-name="${args.holeFile}"]`).count();
  await page.screenshot({ path: path.join(args.screenshots, "vscode-refused-fill.png") });
  log("refused", { message: result.refusal });
  if (args.choice) {
    await toast.first().locator(".monaco-button", { hasText: args.choice }).click();
    result.afterChoice = await saveAndRead(page, path.join(args.workspace, args.holeFile));
    log("chose", { choice: args.choice });
  }
}

// The quick pick "Coda: Fill hole" shows when several fills pass.
const fillPick = (page) =>
  page.locator(".quick-input-widget", { hasText: "fills pass for this hole" });

async function pickedFill(page) {
  const hole = path.join(args.workspace, args.holeFile);
  await openFile(page, args.holeFile);
  await statusItem(page).locator(".codicon-sparkle").waitFor({ timeout });
  await goToLine(page, args.holeLine);
  await page.keyboard.press("End");
  const dirty = page.locator(`.tab.active.dirty[data-resource-name="${args.holeFile}"]`);
  const pick = fillPick(page);
  const rows = pick.locator(".quick-input-list .monaco-list-row");
  // First Esc: the pick goes and the buffer stays as it was.
  await runCommand(page, "Coda: Fill hole");
  await rows.first().waitFor({ timeout });
  result.rows = await rows.evaluateAll((els) => els.map((e) => e.getAttribute("aria-label")));
  result.focused = await pick.locator(".monaco-list-row.focused").getAttribute("aria-label");
  result.title = await pick.locator(".quick-input-title").textContent();
  result.dirtyWhilePicking = await dirty.count();
  await page.screenshot({ path: path.join(args.screenshots, "vscode-pick-fill.png") });
  await page.keyboard.press("Escape");
  await pick.waitFor({ state: "hidden", timeout });
  result.dirtyAfterEscape = await dirty.count();
  log("escaped", { rows: result.rows });
  // Then again, and the `pick`-th row (0: the best, preselected) with the arrow keys and Enter.
  await runCommand(page, "Coda: Fill hole");
  await rows.first().waitFor({ timeout });
  for (let i = 0; i < args.pick; i++) {
    await page.keyboard.press("ArrowDown");
  }
  result.chosen = await pick.locator(".monaco-list-row.focused").getAttribute("aria-label");
  await page.keyboard.press("Enter");
  result.afterPick = await saveAndRead(page, hole);
  log("picked", { chosen: result.chosen });
}

async function cycle(page) {
  const editor = await openFile(page, args.completionFile);
  await statusItem(page).locator(".codicon-sparkle").waitFor({ timeout });
  await goToLine(page, args.triggerLine);
  await page.keyboard.press("End");
  await page.keyboard.press(args.triggerKey);
  const ghost = editor.locator(".ghost-text-decoration, .ghost-text");
  await ghost.first().waitFor({ state: "visible", timeout });
  result.shown = [await visibleSuggestion(editor)];
  for (const key of ["Alt+BracketRight", "Alt+BracketRight", "Alt+BracketRight", "Alt+BracketLeft"]) {
    const before = result.shown[result.shown.length - 1];
    await page.keyboard.press(key);
    // Wait for the ghost text to change (the next candidate); left as is after 10 s.
    await page.waitForFunction(
      (old) => {
        const inline = [...document.querySelectorAll(".monaco-editor .ghost-text-decoration")];
        return inline.map((e) => e.textContent).join("").replace(/\u00a0/g, " ") !== old;
      },
      before,
      { timeout: 10000 },
    ).catch(() => {});
    result.shown.push(await visibleSuggestion(editor));
  }
  await page.screenshot({ path: path.join(args.screenshots, "vscode-cycle.png") });
  await page.keyboard.press("Tab");
  result.afterAccept = await saveAndRead(page, path.join(args.workspace, args.completionFile));
  log("cycled", { shown: result.shown });
}

async function visibleSuggestion(editor) {
  const parts = await editor.locator(".ghost-text-decoration").allTextContents();
  return parts.join("").replace(/\u00a0/g, " ");
}

// The scripted model's log (tests/scripted_coda.py), parsed; waits until `key` is in a record.
async function scriptRecord(page, key) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const text = fs.existsSync(args.scriptLog) ? fs.readFileSync(args.scriptLog, "utf8") : "";
    const found = text.split("\n").filter(Boolean).map((line) => JSON.parse(line)).find((r) => key in r);
    if (found) {
      return found;
    }
    await page.waitForTimeout(50); // a file on disk: nothing in the page to wait on
  }
  throw new Error(`the scripted model never wrote ${key}`);
}

async function downloadThenCancel(page) {
  const status = statusItem(page);
  const ready = status.locator(".codicon-sparkle");
  await openFile(page, args.holeFile);
  result.statusTexts = [];
  const deadline = Date.now() + timeout;
  let shot = false;
  while (!(await ready.count())) {
    if (Date.now() > deadline) {
      throw new Error("Coda never became ready: " + JSON.stringify(result.statusTexts));
    }
    if (await status.count()) {
      const text = ((await status.textContent()) ?? "").trim();
      const label = (await status.getAttribute("aria-label")) ?? "";
      const seen = `${text} | ${label}`;
      if (result.statusTexts[result.statusTexts.length - 1] !== seen) {
        result.statusTexts.push(seen);
      }
      if (!shot && (await status.locator(".codicon-cloud-download").count())) {
        shot = true;
        await page.screenshot({ path: path.join(args.screenshots, "vscode-download.png") });
      }
    }
    await page.waitForTimeout(50); // sampling what the item shows while it changes
  }
  log("ready", { seen: result.statusTexts.length });

  await goToLine(page, args.holeLine);
  await page.keyboard.press("End");
  await runCommand(page, "Coda: Fill hole");
  const toast = page.locator(".notification-toast", { hasText: "coda-lsp: filling the hole" });
  await toast.first().waitFor({ timeout });
  await scriptRecord(page, "started");
  await page.screenshot({ path: path.join(args.screenshots, "vscode-fill-cancel.png") });
  result.fillToastButtons = await toast.first().locator(".monaco-button").allTextContents();
  await toast.first().locator(".monaco-button", { hasText: "Cancel" }).click();
  result.stopped = await scriptRecord(page, "stopped");
  await toast.first().waitFor({ state: "hidden", timeout });
  log("cancelled", result.stopped);
  result.dirtyAfterCancel = await page.locator(`.tab.active.dirty[data-resource-name="${args.holeFile}"]`).count();
  result.editorText = (await page.locator(".editor-instance .monaco-editor .view-lines").first().innerText()).replace(/\u00a0/g, " ");
  result.errorToasts = await toastMessages(page, "error");
}

async function manualTrigger(page) {
  const editor = await openFile(page, args.completionFile);
  await statusItem(page).locator(".codicon-sparkle").waitFor({ timeout });
  await goToLine(page, args.triggerLine);
  await page.keyboard.press("End"); // the cursor moves; nothing is typed
  await page.keyboard.press(args.triggerKey);
  const ghost = editor.locator(".ghost-text-decoration, .ghost-text");
  await ghost.first().waitFor({ state: "visible", timeout });
  result.ghostText = await ghostText(editor);
  log("ghost", { text: result.ghostText });
  await page.screenshot({ path: path.join(args.screenshots, "vscode-manual-trigger.png") });
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (error) => log("pageerror", { message: String(error) }));
  await page.goto(args.url);
  await page.locator(".monaco-workbench").waitFor({ timeout });
  log("workbench");
  const scenario = { edit, startupError, manualTrigger, refusedFill, pickedFill, cycle, downloadThenCancel }[args.scenario ?? "edit"];
  await scenario(page);
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error && error.stack ? error.stack : error);
  try {
    const pages = browser.contexts().flatMap((context) => context.pages());
    if (pages[0]) {
      await pages[0].screenshot({ path: path.join(args.screenshots, "vscode-failure.png") });
    }
  } catch {}
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
