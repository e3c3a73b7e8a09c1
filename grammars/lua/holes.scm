; Lua holes: error("not implemented") and TODO comments.

(function_call
  name: (identifier) @_fn
  arguments: (arguments (string) @_msg)
  (#eq? @_fn "error")
  (#match? @_msg "[Nn]ot implemented|TODO")) @hole

((comment) @hole
  (#match? @hole "^--+ *(TODO|FIXME)"))
