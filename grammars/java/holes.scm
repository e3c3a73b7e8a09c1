; Java holes: throw new UnsupportedOperationException(...) and TODO comments.

(throw_statement
  (object_creation_expression type: (type_identifier) @_type)
  (#eq? @_type "UnsupportedOperationException")) @hole

((line_comment) @hole
  (#match? @hole "^//+ *(TODO|FIXME)"))

((block_comment) @hole
  (#match? @hole "^/[*]+ *(TODO|FIXME)"))
