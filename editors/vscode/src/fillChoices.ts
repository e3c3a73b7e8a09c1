// Several fills pass for one hole: the user picks one in a quick pick.
//
// The extension asks `coda.fillHole` with `choose: true`; when more than one fill passes the
// server's fill contract it applies nothing and answers `{choices: [{text, detail, edit}]}`,
// best first. The best is preselected, Enter applies the one highlighted, Esc leaves the
// buffer as it was. An edit made for a document version that no longer holds (the user typed
// while choosing) is not applied. This module does not talk to the server.
import * as vscode from "vscode";
import { WorkspaceEdit } from "vscode-languageclient/node";

export interface FillChoice {
  text: string;
  detail: string;
  edit: WorkspaceEdit;
}

export interface FillChoices {
  choices: FillChoice[];
}

export function isFillChoices(answer: unknown): answer is FillChoices {
  const choices = (answer as FillChoices | null)?.choices;
  return Array.isArray(choices) && choices.length > 0;
}

interface ChoiceItem extends vscode.QuickPickItem {
  choice: FillChoice;
}

/** A fill on one line: its lines joined with ⏎, indentation runs folded. */
export function label(text: string): string {
  return text
    .trim()
    .split(/\r?\n/)
    .map((line) => line.trim())
    .join(" ⏎ ");
}

/** The fill the user picked, or undefined (Esc, or the picker was closed). */
export async function pickFill(choices: FillChoice[]): Promise<FillChoice | undefined> {
  const items: ChoiceItem[] = choices.map((choice, i) => ({
    label: label(choice.text),
    description: i === 0 ? `${choice.detail} (best)` : choice.detail,
    choice,
  }));
  const picked = await vscode.window.showQuickPick(items, {
    title: `coda-lsp: ${choices.length} fills pass for this hole`,
    placeHolder: "Enter fills the hole with the highlighted one; Esc leaves it as it is",
    matchOnDescription: false,
    ignoreFocusOut: false,
  });
  return picked?.choice;
}

/** The edit's document versions, as the server saw them, still the editor's? */
export function stillCurrent(edit: WorkspaceEdit): boolean {
  for (const change of edit.documentChanges ?? []) {
    if (!("textDocument" in change) || change.textDocument.version === null) {
      continue;
    }
    const uri = vscode.Uri.parse(change.textDocument.uri).toString();
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === uri);
    if (!doc || doc.version !== change.textDocument.version) {
      return false;
    }
  }
  return true;
}
