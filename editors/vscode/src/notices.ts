// What the user is told, and how: one line starting with `coda-lsp:`, a "Show log" button on
// every error, at most one Coda error toast on screen, and none left once the server runs.
//
// VS Code gives an extension no handle to close its own notification, so a toast that no
// longer holds (the server started after all, or a newer error replaces it) is hidden with
// the workbench's `notifications.hideToasts`: it stays in the notification centre, as history.
// This module does not talk to the server.
import * as vscode from "vscode";

export const PREFIX = "coda-lsp:";
const SHOW_LOG = "Show log";

/** `text` on one line (whitespace runs folded) and with the one prefix, whatever it had. */
export function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim().replace(/^(coda-lsp|coda|Coda)\s*:\s*/, "");
  return `${PREFIX} ${flat}`;
}

export class Notices {
  /** Error toasts shown and neither closed nor hidden since (one id per toast: an equal
   * message shown again is another toast, and the first one's closing must not count). */
  private readonly onScreen = new Set<number>();
  private shown = 0;

  constructor(private readonly output: vscode.LogOutputChannel) {}

  /** Log `text` as an error and show it with "Show log"; the older Coda error toast goes. */
  error(text: string, log = true): void {
    const message = oneLine(text);
    if (log) {
      this.output.error(message);
    }
    // An older toast goes; an equal one VS Code closes itself when the new one comes.
    this.hideErrors();
    const id = ++this.shown;
    this.onScreen.add(id);
    void vscode.window.showErrorMessage(message, SHOW_LOG).then((choice) => {
      this.onScreen.delete(id);
      if (choice === SHOW_LOG) {
        this.output.show(true);
      }
    });
  }

  warn(text: string): void {
    const message = oneLine(text);
    this.output.warn(message);
    void vscode.window.showWarningMessage(message);
  }

  info(text: string): void {
    void vscode.window.showInformationMessage(oneLine(text));
  }

  /** The server runs again: the errors about it no longer hold. */
  recovered(): void {
    this.hideErrors();
  }

  private hideErrors(): void {
    if (this.onScreen.size > 0) {
      this.onScreen.clear();
      void vscode.commands.executeCommand("notifications.hideToasts");
    }
  }
}
