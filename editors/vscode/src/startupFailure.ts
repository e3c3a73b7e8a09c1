// A server that cannot start, reported once in its own words and not restarted.
//
// coda-lsp checks its flags and model folder before it speaks LSP; when one is wrong it prints
// one line on stderr and exits with a non-zero status. Left alone, vscode-languageclient would
// start it four more times and show its own JSON-RPC errors, leaving the cause in the log. One
// StartupWatch belongs to one QuietStartClient: it keeps the server's last stderr line and
// stops restarts until the handshake is done, then hands over to the client's default error
// handler (a server that crashes later is still restarted). It shows nothing itself: `report`
// does, and the client keeps its own error toasts back until then.
//
// QuietStartClient keeps vscode-languageclient's own lines about a start that failed (its
// JSON-RPC errors, stacks, "exited with code 2" and "exited successfully") out of the log, and
// `explain` turns the server's reason into one line with the fix: the setting to change.
import * as readline from "readline";
import { Readable } from "stream";
import { LogOutputChannel } from "vscode";
import { Notices } from "./notices";
import { ServerCommand, settingOf } from "./serverCommand";
import {
  CloseAction,
  ErrorAction,
  ErrorHandler,
  LanguageClient,
  StdioOptions,
} from "vscode-languageclient/node";

/** How long to wait for the rest of stderr once the server has gone. */
const STDERR_GRACE_MS = 2000;

export class StartupWatch {
  private lastLine: string | undefined;
  private stderrClosed: Promise<void> = Promise.resolve();
  private reported = false;

  constructor(private readonly report: (reason: string) => void) {}

  /** Whether a failure to start has been (or is being) reported. */
  get failed(): boolean {
    return this.reported;
  }

  /** LanguageClientOptions.stdioOptions: log the server's output as the client would by
   * default (stdout as info, stderr as error) and keep the last non-blank stderr line. */
  readonly stdio: Required<StdioOptions> = {
    stdout: (input, channel) => {
      forEachLine(input, (line) => channel.info(line));
    },
    stderr: (input, channel) => {
      // Called once per process, restarts included: a new process starts a new story.
      this.lastLine = undefined;
      this.reported = false;
      this.stderrClosed = forEachLine(input, (line) => this.keep(line, channel));
    },
  };

  /** LanguageClientOptions.errorHandler. `isRunning`: whether the handshake is done;
   * `fallback`: the client's default handler, used from then on. */
  errorHandler(isRunning: () => boolean, fallback: () => ErrorHandler): ErrorHandler {
    return {
      error: (error, message, count) =>
        isRunning()
          ? fallback().error(error, message, count)
          : { action: ErrorAction.Continue, handled: true }, // the close that follows says why
      closed: () => {
        if (isRunning()) {
          return fallback().closed();
        }
        void this.failedToStart();
        return { action: CloseAction.DoNotRestart, handled: true };
      },
    };
  }

  /** Report, once, why the server did not start: its last stderr line, else `error`. */
  async failedToStart(error?: unknown): Promise<void> {
    if (this.reported) {
      return;
    }
    this.reported = true;
    // The process may be gone before the client has read all it wrote on stderr.
    await Promise.race([this.stderrClosed, new Promise((done) => setTimeout(done, STDERR_GRACE_MS))]);
    this.report(this.lastLine ?? describe(error));
  }

  private keep(line: string, channel: LogOutputChannel): void {
    channel.error(line);
    if (line.trim()) {
      this.lastLine = line.trim();
    }
  }
}

/** What vscode-languageclient says about a server that did not start or was stopped: nothing
 * the user can act on (StartupWatch reports the one reason that matters). */
const NOT_RUNNING_NOISE = [
  /^Connection to server got closed/,
  /couldn't create connection to server/,
  /^Stopping server/,
  /^Server process exited/,
  /^Server initialization failed/,
  /^Restarting server failed/,
  /^Handling connection (error|close) failed/,
];

type Level = "error" | "warn" | "info";

/** A LanguageClient whose own messages are one line each, without stacks or JSON-RPC codes,
 * and shown (when at all) through Notices, with the one prefix and "Show log". Until the server
 * runs, its lines about the failed start are left out. */
export class QuietStartClient extends LanguageClient {
  notices: Notices | undefined;

  override error(message: string, data?: any, showNotification: boolean | "force" = true): void {
    this.relay("error", message, data, showNotification);
  }

  override warn(message: string, data?: any, showNotification: boolean | "force" = true): void {
    this.relay("warn", message, data, showNotification);
  }

  override info(message: string, data?: any, showNotification: boolean | "force" = true): void {
    this.relay("info", message, data, showNotification);
  }

  private relay(level: Level, message: string, data: any, show: boolean | "force"): void {
    const running = this.isRunning();
    if (!running && NOT_RUNNING_NOISE.some((noise) => noise.test(message))) {
      return;
    }
    const detail = data === undefined || data === null ? "" : describe(data);
    const line = [message, detail].filter(Boolean).join(": ").replace(/\s+/g, " ").trim();
    this.outputChannel[level](line);
    if (running && this.notices && (show === "force" || (show === true && level === "error"))) {
      this.notices.error(line, false);
    }
  }
}

/** The server's reason for not starting as one line that names the fix: the setting to
 * change. `server`: the command line that was tried. */
export function explain(reason: string, server: ServerCommand): string {
  const line = reason.replace(/\s+/g, " ").trim().replace(/^coda-lsp:\s*/, "");
  if (/\bENOENT\b|\bEACCES\b/.test(line)) {
    return `${settingOf(server)} runs ${server.command}, which cannot be started (${line}): ` +
      `set ${settingOf(server)} to the full path of coda-lsp, e.g. ["/path/to/.venv/bin/coda-lsp"]`;
  }
  if (/\b(coda|python)\.[\w.]+/.test(line)) {
    return line; // the server named the setting itself (CODA_LSP_MODEL_SETTING)
  }
  return `${line} (${fixFor(line, server)})`;
}

function fixFor(line: string, server: ServerCommand): string {
  if (/No module named|ModuleNotFoundError/.test(line)) {
    return `${server.command} has no coda-lsp: install it there (pip install /path/to/coda-lsp) ` +
      `or change ${settingOf(server)}`;
  }
  if (/device|cuda|mps/i.test(line)) {
    return "check coda.server.device";
  }
  if (/model|checkpoint|config\.json|safetensors|weights/i.test(line)) {
    return "check coda.server.modelPath";
  }
  if (/argument|invalid choice|--\w/.test(line)) {
    return "check coda.server.args";
  }
  return `check ${settingOf(server)}; the server's own lines are in "Coda: Show log"`;
}

/** Call `onLine` for each line of `input`; resolves when the stream has ended. */
function forEachLine(input: Readable, onLine: (line: string) => void): Promise<void> {
  const lines = readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 });
  lines.on("line", onLine);
  return new Promise((resolve) => lines.on("close", () => resolve()));
}

/** An error as one short phrase: its message, never its stack. */
function describe(error: unknown): string {
  if (error === undefined) {
    return 'it exited during startup (see "Coda: Show log")';
  }
  if (error instanceof Error || (typeof error === "object" && error !== null && "message" in error)) {
    return String((error as { message: unknown }).message);
  }
  return typeof error === "string" ? error : JSON.stringify(error);
}
