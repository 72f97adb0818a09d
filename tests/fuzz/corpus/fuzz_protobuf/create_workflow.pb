
°wf(:5
a$3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5b
Do {topic}:B
b$3b1f1a52-1c2d-4e5f-8a9b-0c1d2e3f4a5bThen {nope}*a*b*cJaB	
topicZhttp://[::1Zhttps://example.com/h