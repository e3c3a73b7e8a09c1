; Go spans.

[
  (expression_statement)
  (short_var_declaration)
  (assignment_statement)
  (return_statement)
  (var_declaration)
  (inc_statement)
  (dec_statement)
  (go_statement)
  (defer_statement)
] @statement.outer

(block) @block.inner
(field_declaration_list) @block.inner
(literal_value) @block.inner

(function_declaration body: (block) @function.inner)
(method_declaration body: (block) @function.inner)
(func_literal body: (block) @function.inner)

(call_expression arguments: (argument_list) @call.inner)

(short_var_declaration right: (_) @assignment.rhs)
(assignment_statement right: (_) @assignment.rhs)
(var_spec value: (_) @assignment.rhs)

(return_statement (_) @expression)
(if_statement condition: (_) @expression)

(interpreted_string_literal) @string.inner
(raw_string_literal) @string.inner
