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
  /** Error toasts shown and neither closed by the user nor hidden since. */
  private readonly onScreen = new Set<string>();

  constructor(private readonly output: vscode.LogOutputChannel) {}

  /** Log `text` as an error and show it with "Show log"; hides an older, different one. */
  error(text: string, log = true): void {
    const message = oneLine(text);
    if (log) {
      this.output.error(message);
    }
    if (this.onScreen.has(message)) {
      return; // the same toast is still up: VS Code would only replace it
    }
    this.hideErrors();
    this.onScreen.add(message);
    void vscode.window.showErrorMessage(message, SHOW_LOG).then((choice) => {
      this.onScreen.delete(message);
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
