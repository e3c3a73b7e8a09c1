; Rust holes: todo!() / unimplemented!() and TODO comments.

(macro_invocation
  macro: (identifier) @_name
  (#any-of? @_name "todo" "unimplemented")) @hole

((line_comment) @hole
  (#match? @hole "^//+ *(TODO|FIXME)"))

((block_comment) @hole
  (#match? @hole "^/[*]+ *(TODO|FIXME)"))
