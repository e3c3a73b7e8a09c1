// Coda for VS Code: a thin client of coda-lsp.
//
// Starts the server over stdio, passes the `coda.*` settings as initializationOptions and
// `workspace/didChangeConfiguration`, and leaves ghost text to VS Code's own inline-suggestion
// UI (vscode-languageclient maps `textDocument/inlineCompletion` onto it). Adds the commands
// Fill hole / Restart server / Toggle completions / Show log and a status-bar item fed by
// the server's `coda/status` notification. A server that cannot start is reported once, in
// its own words, and not restarted (startupFailure.ts). No completion logic lives here.
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ErrorHandler,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from "vscode-languageclient/node";
import { resolveServerCommand } from "./serverCommand";
import { affectsServer, needsRestart, serverSettingNames, serverSettings } from "./settings";
import { QuietStartClient, StartupWatch } from "./startupFailure";
import { CodaStatus, StatusBar } from "./status";

const FILL_HOLE_COMMAND = "coda.fillHole"; // the server's command (ARCHITECTURE.md)

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let status: StatusBar;
let settingNames: string[] = [];

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("Coda", { log: true });
  status = new StatusBar();
  settingNames = serverSettingNames(context.extension.packageJSON);
  status.setEnabled(vscode.workspace.getConfiguration("coda").get<boolean>("enabled", true));
  context.subscriptions.push(
    output,
    status,
    vscode.commands.registerCommand("coda.fill", fillHole),
    vscode.commands.registerCommand("coda.restartServer", restartServer),
    vscode.commands.registerCommand("coda.toggleCompletions", toggleCompletions),
    vscode.commands.registerCommand("coda.showLog", () => output.show(true)),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
  );
  await startServer();
}

export async function deactivate(): Promise<void> {
  await stopServer();
}

async function startServer(): Promise<void> {
  const resolved = resolveServerCommand();
  if (!resolved) {
    const message =
      "coda-lsp not found: install it from a checkout (pip install /path/to/coda-lsp) " +
      "or set coda.server.command.";
    output.error(message);
    status.setStopped(message);
    void vscode.window.showErrorMessage(`Coda: ${message}`);
    return;
  }
  output.info(`starting ${resolved.command} ${resolved.args.join(" ")} (from ${resolved.source})`);
  const serverOptions: ServerOptions = {
    command: resolved.command,
    args: resolved.args,
    // No `transport`: with TransportKind.stdio the client appends `--stdio`, which coda-lsp
    // does not take (stdio is its default).
  };
  const watch = new StartupWatch((reason) => {
    if (client === started) {
      reportStartFailure(reason);
    }
  });
  let fallback: ErrorHandler | undefined;
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: serverSettings(settingNames),
    outputChannel: output,
    stdioOptions: watch.stdio,
    errorHandler: watch.errorHandler(
      () => started.isRunning(),
      () => (fallback ??= started.createDefaultErrorHandler()),
    ),
    initializationFailedHandler: () => false, // no retry, and the watch says why
    // Settings are pushed by hand (onConfigurationChanged) so that the client-side
    // `coda.server.*` settings never reach the server.
    synchronize: {},
  };
  const started = new QuietStartClient("coda", "Coda", serverOptions, clientOptions);
  client = started;
  status.setServerStatus({ state: "loading", message: "starting the server", latencyMs: null });
  started.onDidChangeState((event) => {
    if (event.newState === State.Stopped && client === started && !watch.failed) {
      status.setStopped("the server stopped");
    }
  });
  try {
    await started.start();
  } catch (error) {
    await watch.failedToStart(error);
    return;
  }
  started.onNotification("coda/status", (params: CodaStatus) => status.setServerStatus(params));
}

/** One error toast with the server's own reason; no "Restart" button: fix the cause first
 * (the settings that start the server restart it when they change). */
function reportStartFailure(reason: string): void {
  const message = `the server did not start: ${reason}`;
  output.error(message);
  status.setStopped(message);
  void vscode.window.showErrorMessage(`Coda: ${message}`, "Show log").then((choice) => {
    if (choice) {
      output.show(true);
    }
  });
}

async function stopServer(): Promise<void> {
  const running = client;
  client = undefined;
  if (running && running.needsStop()) {
    await running.stop();
  }
}

async function restartServer(): Promise<void> {
  output.info("restarting the server");
  await stopServer();
  await startServer();
}

async function toggleCompletions(): Promise<void> {
  const config = vscode.workspace.getConfiguration("coda");
  const enabled = !config.get<boolean>("enabled", true);
  await config.update("enabled", enabled, vscode.ConfigurationTarget.Global);
  vscode.window.setStatusBarMessage(`Coda completions ${enabled ? "on" : "off"}`, 2000);
}

async function onConfigurationChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
  if (event.affectsConfiguration("coda.enabled")) {
    status.setEnabled(vscode.workspace.getConfiguration("coda").get<boolean>("enabled", true));
  }
  if (needsRestart(event)) {
    await restartServer();
    return;
  }
  if (client?.isRunning() && affectsServer(event, settingNames)) {
    await client.sendNotification(DidChangeConfigurationNotification.type, {
      settings: { coda: serverSettings(settingNames) },
    });
  }
}

/** Fill the hole at the cursor (or the selection) through the server's `coda.fillHole`
 * command; the server applies the edit with `workspace/applyEdit`. */
async function fillHole(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    return;
  }
  if (!client?.isRunning()) {
    void vscode.window.showWarningMessage("Coda: the server is not running.");
    return;
  }
  const converter = client.code2ProtocolConverter;
  const argument = {
    uri: converter.asUri(editor.document.uri),
    range: converter.asRange(editor.selection),
  };
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: "Coda: filling the hole" },
    () =>
      client!.sendRequest(ExecuteCommandRequest.type, {
        command: FILL_HOLE_COMMAND,
        arguments: [argument],
      }),
  );
}
