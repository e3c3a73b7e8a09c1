; C spans (also inherited by cpp).

[
  (expression_statement)
  (declaration)
  (return_statement)
  (break_statement)
  (continue_statement)
] @statement.outer

(compound_statement) @block.inner
(field_declaration_list) @block.inner
(enumerator_list) @block.inner

(function_definition body: (compound_statement) @function.inner)

(call_expression arguments: (argument_list) @call.inner)

(init_declarator value: (_) @assignment.rhs)
(assignment_expression right: (_) @assignment.rhs)

(return_statement (_) @expression)
(if_statement condition: (_ (_) @expression))
(while_statement condition: (_ (_) @expression))

(string_literal) @string.inner
