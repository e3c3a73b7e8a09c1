; Java spans.

[
  (expression_statement)
  (local_variable_declaration)
  (return_statement)
  (throw_statement)
  (field_declaration)
  (import_declaration)
] @statement.outer

(block) @block.inner
(class_body) @block.inner
(interface_body) @block.inner
(switch_block) @block.inner

(method_declaration body: (block) @function.inner)
(constructor_declaration body: (constructor_body) @function.inner)
(lambda_expression body: (block) @function.inner)

(method_invocation arguments: (argument_list) @call.inner)
(object_creation_expression arguments: (argument_list) @call.inner)

(variable_declarator value: (_) @assignment.rhs)
(assignment_expression right: (_) @assignment.rhs)

(return_statement (_) @expression)
(if_statement condition: (parenthesized_expression (_) @expression))
(while_statement condition: (parenthesized_expression (_) @expression))
(lambda_expression body: (expression) @expression)

(string_literal) @string.inner
