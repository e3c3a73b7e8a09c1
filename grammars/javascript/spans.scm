; JavaScript spans (also inherited by typescript and tsx).

[
  (expression_statement)
  (return_statement)
  (throw_statement)
  (lexical_declaration)
  (variable_declaration)
  (import_statement)
  (break_statement)
  (continue_statement)
] @statement.outer

(statement_block) @block.inner
(class_body) @block.inner
(switch_body) @block.inner

(function_declaration body: (statement_block) @function.inner)
(function_expression body: (statement_block) @function.inner)
(arrow_function body: (statement_block) @function.inner)
(method_definition body: (statement_block) @function.inner)
(generator_function_declaration body: (statement_block) @function.inner)

(call_expression arguments: (arguments) @call.inner)
(new_expression arguments: (arguments) @call.inner)

(variable_declarator value: (_) @assignment.rhs)
(assignment_expression right: (_) @assignment.rhs)
(augmented_assignment_expression right: (_) @assignment.rhs)
(pair value: (_) @assignment.rhs)

(return_statement (_) @expression)
(arrow_function body: (expression) @expression)
(parenthesized_expression (_) @expression)

(string) @string.inner
(template_string) @string.inner
