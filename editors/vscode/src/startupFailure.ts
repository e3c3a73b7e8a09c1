// A server that cannot start, reported once in its own words and not restarted.
//
// coda-lsp checks its flags and model folder before it speaks LSP; when one is wrong it prints
// one line on stderr and exits with a non-zero status. Left alone, vscode-languageclient would
// start it four more times and show its own JSON-RPC errors, leaving the cause in the log. One
// StartupWatch belongs to one QuietStartClient: it keeps the server's last stderr line and
// stops restarts until the handshake is done, then hands over to the client's default error
// handler (a server that crashes later is still restarted). It shows nothing itself: `report`
// does, and the client keeps its own error toasts back until then.
import * as readline from "readline";
import { Readable } from "stream";
import { LogOutputChannel } from "vscode";
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

/** A LanguageClient that only logs its own errors until the server is running: before that,
 * its JSON-RPC errors ("Pending response rejected…") say nothing the user can act on, and
 * StartupWatch reports the one reason that matters. */
export class QuietStartClient extends LanguageClient {
  override error(message: string, data?: any, showNotification?: boolean | "force"): void {
    super.error(message, data, this.isRunning() ? showNotification : false);
  }
}

/** Call `onLine` for each line of `input`; resolves when the stream has ended. */
function forEachLine(input: Readable, onLine: (line: string) => void): Promise<void> {
  const lines = readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 });
  lines.on("line", onLine);
  return new Promise((resolve) => lines.on("close", () => resolve()));
}

function describe(error: unknown): string {
  if (error === undefined) {
    return 'it exited during startup (see "Coda: Show log")';
  }
  return error instanceof Error ? error.message : String(error);
}
