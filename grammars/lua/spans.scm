; Lua spans.

[
  (variable_declaration)
  (return_statement)
  (break_statement)
] @statement.outer
(block (assignment_statement) @statement.outer)
(chunk (assignment_statement) @statement.outer)
(block (function_call) @statement.outer)
(chunk (function_call) @statement.outer)

(block) @block.inner
(table_constructor) @block.inner

(function_declaration body: (block) @function.inner)
(function_definition body: (block) @function.inner)

(function_call arguments: (arguments) @call.inner)

(assignment_statement (expression_list) @assignment.rhs)
(field value: (_) @assignment.rhs)

(return_statement (expression_list) @expression)
(if_statement condition: (_) @expression)
(while_statement condition: (_) @expression)

(string) @string.inner
