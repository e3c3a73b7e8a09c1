; inherits: c
; C++: throw std::logic_error("not implemented") and the like.

(throw_statement
  (call_expression arguments: (argument_list (string_literal) @_msg))
  (#match? @_msg "[Nn]ot implemented|TODO")) @hole
