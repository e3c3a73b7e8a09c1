// Coda for VS Code: a thin client of coda-lsp.
//
// Starts the server over stdio, passes the `coda.*` settings as initializationOptions and
// `workspace/didChangeConfiguration`, and leaves ghost text to VS Code's own inline-suggestion
// UI (vscode-languageclient maps `textDocument/inlineCompletion` onto it). Adds the commands
// Fill hole / Restart server / Toggle completions / Show log and a status-bar item fed by
// the server's `coda/status` notification. A server that cannot start is reported once, in
// one line that names the setting to change, and not restarted (startupFailure.ts); what the
// user is told goes through Notices (one prefix, "Show log", no stale toasts). A hole the
// server refuses to fill comes as its `window/showMessageRequest`, whose "Fill anyway (…)"
// button vscode-languageclient shows as is. When several fills pass, "Fill hole" lets the user
// pick one (fillChoices.ts). No completion logic lives here.
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ErrorHandler,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  ShowMessageNotification,
  ShowMessageParams,
  MessageType,
  State,
} from "vscode-languageclient/node";
import { FillChoice, isFillChoices, pickFill, stillCurrent } from "./fillChoices";
import { Notices } from "./notices";
import { NOT_FOUND, problem, resolveServerCommand } from "./serverCommand";
import { affectsServer, needsRestart, serverSettingNames, serverSettings } from "./settings";
import { explain, QuietStartClient, StartupWatch } from "./startupFailure";
import { CodaStatus, StatusBar } from "./status";

const FILL_HOLE_COMMAND = "coda.fillHole"; // the server's command (ARCHITECTURE.md)
/** Read by coda-lsp so that its "model folder not found" names this setting, not --model. */
const MODEL_SETTING_ENV = { CODA_LSP_MODEL_SETTING: "coda.server.modelPath" };

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let notices: Notices;
let status: StatusBar;
let settingNames: string[] = [];

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("Coda", { log: true });
  notices = new Notices(output);
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
  const cannotRun = resolved ? problem(resolved) : NOT_FOUND;
  if (!resolved || cannotRun) {
    reportStartFailure(cannotRun ?? NOT_FOUND);
    return;
  }
  output.info(`starting ${resolved.command} ${resolved.args.join(" ")} (from ${resolved.source})`);
  const serverOptions: ServerOptions = {
    command: resolved.command,
    args: resolved.args,
    options: { env: { ...process.env, ...MODEL_SETTING_ENV } },
    // No `transport`: with TransportKind.stdio the client appends `--stdio`, which coda-lsp
    // does not take (stdio is its default).
  };
  const watch = new StartupWatch((reason) => {
    if (client === started) {
      reportStartFailure(`the server did not start: ${explain(reason, resolved)}`);
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
  started.notices = notices;
  client = started;
  status.setServerStatus({ state: "loading", message: "starting the server", latencyMs: null });
  started.onDidChangeState((event) => {
    if (client !== started) {
      return;
    }
    if (event.newState === State.Running) {
      notices.recovered(); // an error about an earlier start no longer holds
    } else if (event.newState === State.Stopped && !watch.failed) {
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
  started.onNotification(ShowMessageNotification.type, showServerMessage);
}

/** The server's window/showMessage, with the one prefix, and "Show log" on errors. */
function showServerMessage(params: ShowMessageParams): void {
  if (params.type === MessageType.Error) {
    notices.error(params.message);
  } else if (params.type === MessageType.Warning) {
    notices.warn(params.message);
  } else {
    notices.info(params.message);
  }
}

/** One error toast, one line: the cause and the setting that fixes it. No "Restart" button:
 * fix the cause first (the settings that start the server restart it when they change). */
function reportStartFailure(message: string): void {
  notices.error(message);
  status.setStopped(message);
}

async function stopServer(): Promise<void> {
  const running = client;
  client = undefined;
  if (running && running.needsStop()) {
    output.info("stopping the server");
    await running.stop().catch((error) => output.warn(`stopping the server: ${error?.message ?? error}`));
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
  vscode.window.setStatusBarMessage(`coda-lsp: completions ${enabled ? "on" : "off"}`, 2000);
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
 * command. One fill to write: the server applies it with `workspace/applyEdit`. Several that
 * pass the fill contract: the server answers them (`choose`) and the user picks one
 * (fillChoices.ts); Esc leaves the buffer as it was. */
async function fillHole(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    return;
  }
  const running = client;
  if (!running?.isRunning()) {
    notices.warn('the server is not running; "Coda: Show log" says why');
    return;
  }
  const converter = running.code2ProtocolConverter;
  const argument = {
    uri: converter.asUri(editor.document.uri),
    range: converter.asRange(editor.selection),
    choose: true,
  };
  // A notification with Cancel: a fill takes seconds on a CPU. Cancel sends $/cancelRequest,
  // the server stops the model at its next step and applies nothing.
  let cancelled = false;
  let answer: unknown;
  try {
    answer = await vscode.window.withProgress(
      {
        location: vscode.ProgressLocation.Notification,
        title: "coda-lsp: filling the hole",
        cancellable: true,
      },
      (_progress, token) => {
        token.onCancellationRequested(() => {
          cancelled = true;
        });
        return running.sendRequest(
          ExecuteCommandRequest.type,
          { command: FILL_HOLE_COMMAND, arguments: [argument] },
          token,
        );
      },
    );
  } catch (error) {
    if (cancelled) {
      vscode.window.setStatusBarMessage("coda-lsp: fill cancelled", 3000);
    } else if (running.isRunning()) {
      notices.error(`the fill failed: ${(error as Error)?.message ?? error}`);
    }
    return;
  }
  if (isFillChoices(answer)) {
    await applyPicked(running, answer.choices);
  }
}

async function applyPicked(running: LanguageClient, choices: FillChoice[]): Promise<void> {
  const picked = await pickFill(choices);
  if (!picked) {
    return; // Esc: the buffer stays as it was
  }
  if (!stillCurrent(picked.edit)) {
    notices.warn("the file changed while you chose; run Fill hole again");
    return;
  }
  const edit = await running.protocol2CodeConverter.asWorkspaceEdit(picked.edit);
  if (!(await vscode.workspace.applyEdit(edit))) {
    notices.warn("VS Code did not apply the fill; run Fill hole again");
  }
}
