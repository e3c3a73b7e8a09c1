; JavaScript holes (also inherited by typescript and tsx).

(throw_statement
  (new_expression
    constructor: (identifier) @_ctor
    arguments: (arguments (string) @_msg))
  (#eq? @_ctor "Error")
  (#match? @_msg "[Nn]ot [Ii]mplemented|TODO")) @hole

((comment) @hole
  (#match? @hole "^(//+|/[*]+) *(TODO|FIXME)"))
