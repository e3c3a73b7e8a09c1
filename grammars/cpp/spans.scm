; inherits: c
; C++ additions on top of the C spans.

(throw_statement) @statement.outer
(lambda_expression body: (compound_statement) @function.inner)
(field_declaration default_value: (_) @assignment.rhs)
