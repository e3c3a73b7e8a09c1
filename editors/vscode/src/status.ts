// The status-bar item: model downloading (percent) / loading / ready (last latency) / error /
// completions off.
//
// Fed by the server's `coda/status` notification and by the client's own state; clicking it
// toggles completions. This module does not talk to the server.
import * as vscode from "vscode";

export interface ModelInUse {
  model: string;
  device: string;
  dtype: string;
}

export interface CodaStatus {
  state: "loading" | "ready" | "error";
  message: string;
  latencyMs: number | null;
  /** Which model serves each role ("typing", "fill"), on which device and dtype. */
  models?: Record<string, ModelInUse>;
}

/** Tooltip lines naming the model of each role, e.g. "typing: model on cpu (float32)". */
export function rolesText(models: Record<string, ModelInUse> | undefined): string {
  if (!models) {
    return "";
  }
  return ["typing", "fill"]
    .filter((role) => models[role])
    .map((role) => `\n${role}: ${models[role].model} on ${models[role].device} (${models[role].dtype})`)
    .join("");
}

const DOWNLOADING = /^downloading [^ ]+: (\d+) %/;

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private server: CodaStatus = { state: "loading", message: "starting", latencyMs: null };
  private enabled = true;

  constructor() {
    this.item = vscode.window.createStatusBarItem("coda.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "Coda";
    this.item.command = "coda.toggleCompletions";
    this.render();
    this.item.show();
  }

  setServerStatus(status: CodaStatus): void {
    this.server = status;
    this.render();
  }

  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
    this.render();
  }

  /** Shown when the server cannot be started or has stopped. */
  setStopped(message: string): void {
    this.server = { state: "error", message, latencyMs: null };
    this.render();
  }

  private render(): void {
    const { state, message, latencyMs } = this.server;
    this.item.backgroundColor = undefined;
    // A Hub model downloading (at start, or after a settings change names one): the percent
    // on the item, "downloading owner/name: 42 % (12.3 / 29.1 MB)" in its tooltip.
    const download = state === "error" ? null : DOWNLOADING.exec(message ?? "");
    if (download) {
      this.item.text = `$(cloud-download) Coda ${download[1]} %`;
      this.item.tooltip = `coda-lsp: ${message}`;
    } else if (state === "loading") {
      this.item.text = "$(loading~spin) Coda";
      this.item.tooltip = `coda-lsp: ${message || "loading the model"}`;
    } else if (state === "error") {
      this.item.text = "$(error) Coda";
      this.item.tooltip = `coda-lsp: ${message}\nClick to toggle completions; see "Coda: Show log".`;
      this.item.backgroundColor = new vscode.ThemeColor("statusBarItem.errorBackground");
    } else if (!this.enabled) {
      this.item.text = "$(circle-slash) Coda";
      this.item.tooltip = "coda-lsp: completions off (click to turn on)";
    } else {
      const latency = latencyMs === null ? "" : ` ${Math.round(latencyMs)} ms`;
      this.item.text = `$(sparkle) Coda${latency}`;
      this.item.tooltip = `coda-lsp: ${message || "ready"}${rolesText(this.server.models)}${latency ? `\nlast completion:${latency}` : ""}\nClick to turn completions off.`;
    }
  }

  dispose(): void {
    this.item.dispose();
  }
}
