; Bash holes: `: TODO` placeholder commands and TODO comments.

(command
  name: (command_name) @_colon
  argument: (word) @_todo
  (#eq? @_colon ":")
  (#eq? @_todo "TODO")) @hole

((comment) @hole
  (#match? @hole "^#+ *(TODO|FIXME)"))
