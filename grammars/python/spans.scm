; Python spans: what inline completion may regenerate (see grammars/README.md).

[
  (expression_statement)
  (return_statement)
  (raise_statement)
  (assert_statement)
  (import_statement)
  (import_from_statement)
  (delete_statement)
  (global_statement)
  (pass_statement)
  (break_statement)
  (continue_statement)
] @statement.outer

(block) @block.inner

(function_definition body: (block) @function.inner)

(call arguments: (argument_list) @call.inner)

(assignment right: (_) @assignment.rhs)
(augmented_assignment right: (_) @assignment.rhs)
(keyword_argument value: (_) @assignment.rhs)

(return_statement (_) @expression)
(if_statement condition: (_) @expression)
(elif_clause condition: (_) @expression)
(while_statement condition: (_) @expression)
(for_statement right: (_) @expression)

(string) @string.inner
