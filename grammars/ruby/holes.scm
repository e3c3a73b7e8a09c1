; Ruby holes: raise NotImplementedError and TODO comments.

(call
  method: (identifier) @_raise
  arguments: (argument_list . (constant) @_exc)
  (#eq? @_raise "raise")
  (#eq? @_exc "NotImplementedError")) @hole

((comment) @hole
  (#match? @hole "^#+ *(TODO|FIXME)"))
