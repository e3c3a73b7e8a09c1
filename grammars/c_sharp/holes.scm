; C# holes: throw new NotImplementedException() and TODO comments.

(throw_statement
  (object_creation_expression type: (identifier) @_type)
  (#any-of? @_type "NotImplementedException" "NotSupportedException")) @hole

((comment) @hole
  (#match? @hole "^(//+|/[*]+) *(TODO|FIXME)"))
