
0
$3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5b"new2m'
goal
	llm.model
id
no_such_field
*