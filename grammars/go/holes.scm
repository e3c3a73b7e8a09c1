; Go holes: panic("TODO") / panic("not implemented") and TODO comments.

(call_expression
  function: (identifier) @_fn
  arguments: (argument_list (interpreted_string_literal) @_msg)
  (#eq? @_fn "panic")
  (#match? @_msg "TODO|[Nn]ot implemented|[Uu]nimplemented")) @hole

((comment) @hole
  (#match? @hole "^(//+|/[*]+) *(TODO|FIXME)"))
