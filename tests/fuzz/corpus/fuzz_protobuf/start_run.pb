
w

extrax
topicAI"r