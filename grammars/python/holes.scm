; Python holes: placeholders a "Fill this hole" code action replaces.

(expression_statement (ellipsis)) @hole

(pass_statement) @hole

(raise_statement
  (identifier) @_exc
  (#eq? @_exc "NotImplementedError")) @hole

(raise_statement
  (call function: (identifier) @_exc)
  (#eq? @_exc "NotImplementedError")) @hole

((comment) @hole
  (#match? @hole "^#+ *(TODO|FIXME)"))
